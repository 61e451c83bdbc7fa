//! Small text checks shared by the aggregates.

/// Trims `s` and returns it when it has 1..=`max_chars` characters.
pub(crate) fn trimmed_within(s: &str, max_chars: usize) -> Option<String> {
    let t = s.trim();
    let n = t.chars().count();
    (1..=max_chars).contains(&n).then(|| t.to_owned())
}

/// True when `s` is a non-blank provider reference (intent, refund or dispute id) of at most
/// `max_chars` characters without surrounding whitespace.
pub(crate) fn is_reference(s: &str, max_chars: usize) -> bool {
    !s.is_empty() && s.trim() == s && s.chars().count() <= max_chars
}

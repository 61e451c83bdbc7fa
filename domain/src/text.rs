//! Small text checks shared by the aggregates, and [`named_enum!`] for enums stored by name.

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

/// Declares a fieldless enum whose variants are stored by an explicit name (`Variant = "name"`):
/// serde writes that name, and the enum gets `ALL` (every variant in declaration order),
/// `as_str`, `parse` and a `Display` that prints the name. The names are written out, not derived
/// from the Rust identifiers, so renaming a variant can't change what is stored.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The stored name, as serialized.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant stored as `s`, if any.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use named_enum;

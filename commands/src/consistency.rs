//! Read-your-writes: the consistency token a command answers with.
//!
//! The token names the stream versions the command's commit produced. A read model reflects the
//! write once it has applied each of those streams it consumes up to that version, which every
//! read-model store records per (projection, stream) on both backends. So the token means the
//! same thing embedded and on AWS, where a commit has no feed position yet.
//!
//! Its text form is URL-safe (`order.ord_1.1~product.prd_a.7`): stream type, id and version
//! joined by `.`, streams joined by `~`. Identifiers never contain either. Clients treat it as
//! opaque.

use crate::{CommitResult, StreamRef, StreamVersion};
use domain::StreamType;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A commit holds at most this many streams (one TransactWriteItems has at most 100 actions).
pub const MAX_TOKEN_STREAMS: usize = 100;

/// The stream versions a command wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Consistency(Vec<StreamVersion>);

impl Consistency {
    /// The token of a commit; `None` when it wrote no stream.
    pub fn of(commit: &CommitResult) -> Option<Self> {
        (!commit.streams.is_empty()).then(|| Self(commit.streams.clone()))
    }

    pub fn streams(&self) -> &[StreamVersion] {
        &self.0
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("~")?;
            }
            write!(
                f,
                "{}.{}.{}",
                s.stream.stream_type, s.stream.stream_id, s.version
            )?;
        }
        Ok(())
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid consistency token: {0}")]
pub struct InvalidConsistency(&'static str);

impl FromStr for Consistency {
    type Err = InvalidConsistency;

    fn from_str(s: &str) -> Result<Self, InvalidConsistency> {
        let parts: Vec<&str> = s.split('~').collect();
        if parts.len() > MAX_TOKEN_STREAMS {
            return Err(InvalidConsistency("too many streams"));
        }
        parts
            .into_iter()
            .map(|part| {
                let mut fields = part.split('.');
                let (Some(kind), Some(id), Some(version), None) =
                    (fields.next(), fields.next(), fields.next(), fields.next())
                else {
                    return Err(InvalidConsistency("expected type.id.version per stream"));
                };
                let stream_type =
                    StreamType::parse(kind).ok_or(InvalidConsistency("unknown stream type"))?;
                if !domain::is_valid_id(id) {
                    return Err(InvalidConsistency("invalid stream id"));
                }
                let version = version
                    .parse::<u64>()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or(InvalidConsistency("the version must be a positive integer"))?;
                Ok(StreamVersion {
                    stream: StreamRef::new(stream_type, id),
                    version,
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl TryFrom<String> for Consistency {
    type Error = InvalidConsistency;

    fn try_from(s: String) -> Result<Self, InvalidConsistency> {
        s.parse()
    }
}

impl From<Consistency> for String {
    fn from(token: Consistency) -> String {
        token.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(stream_type: StreamType, id: &str, version: u64) -> StreamVersion {
        StreamVersion {
            stream: StreamRef::new(stream_type, id),
            version,
        }
    }

    #[test]
    fn a_commit_token_round_trips_through_its_url_safe_text() {
        let commit = CommitResult {
            position: None,
            streams: vec![
                version(StreamType::Order, "ord_1", 1),
                version(StreamType::Product, "prd-a", 7),
            ],
            committed_at: chrono::Utc::now(),
        };
        let token = Consistency::of(&commit).expect("a token");
        let text = token.to_string();
        assert_eq!(text, "order.ord_1.1~product.prd-a.7");
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
        assert_eq!(text.parse::<Consistency>(), Ok(token.clone()));
        let json = serde_json::to_string(&token).expect("encodes");
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(
            serde_json::from_str::<Consistency>(&json).expect("decodes"),
            token
        );
    }

    #[test]
    fn a_commit_without_streams_has_no_token() {
        let commit = CommitResult {
            position: Some(3),
            streams: Vec::new(),
            committed_at: chrono::Utc::now(),
        };
        assert_eq!(Consistency::of(&commit), None);
    }

    #[test]
    fn malformed_tokens_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "expected type.id.version per stream"),
            ("order.ord_1", "expected type.id.version per stream"),
            ("order.ord_1.1.2", "expected type.id.version per stream"),
            ("invoice.i_1.1", "unknown stream type"),
            ("order.ord 1.1", "invalid stream id"),
            ("order.ord_1.0", "the version must be a positive integer"),
            ("order.ord_1.-1", "the version must be a positive integer"),
            ("order.ord_1.1~", "expected type.id.version per stream"),
        ] {
            assert_eq!(
                text.parse::<Consistency>(),
                Err(InvalidConsistency(reason)),
                "{text:?}"
            );
        }
        let many = vec!["order.o.1"; MAX_TOKEN_STREAMS + 1].join("~");
        assert_eq!(
            many.parse::<Consistency>(),
            Err(InvalidConsistency("too many streams"))
        );
    }
}

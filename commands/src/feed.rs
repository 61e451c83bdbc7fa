//! Where a reader is in the durable feed.
//!
//! The feed is split into partitions, each with its own gapless positions from 1. An event goes
//! to the partition a stable hash of its stream picks ([`partition_of_stream`]), so each stream's
//! events stay in order within one partition. The embedded store has one partition; the AWS
//! feed has as many as its stage was created with.
//!
//! - An event's `global_position` packs its partition and its position in that partition into
//!   one number ([`pack`]): partition 0 is the position itself, so a one-partition feed numbers
//!   its events 1, 2, 3 as it always did. Positions of different partitions do not compare.
//! - A reader's place is a [`FeedCursor`]: one position per partition, written as one opaque
//!   string (`12` for one partition, `12.0.7.3` for four). The analyst export's `after=`, the
//!   checkpoints and the rebuilds all keep this string.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How many bits of a packed position hold the position within its partition.
const OFFSET_BITS: u32 = 48;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// The most partitions a feed may have.
pub const MAX_PARTITIONS: u32 = 1 << (64 - OFFSET_BITS);

/// Packs a partition and a position within it into one `global_position`.
pub fn pack(partition: u32, position: u64) -> u64 {
    debug_assert!(
        position <= OFFSET_MASK,
        "feed position {position} overflows"
    );
    (u64::from(partition) << OFFSET_BITS) | position
}

/// The partition and the position within it of a packed `global_position`.
pub fn unpack(global_position: u64) -> (u32, u64) {
    (
        (global_position >> OFFSET_BITS) as u32,
        global_position & OFFSET_MASK,
    )
}

/// The feed partition of a stream: FNV-1a of `<type>/<id>`, the same in every process and
/// release (changing it would move streams between partitions).
pub fn partition_of_stream(stream_type: &str, stream_id: &str, partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    let mut hash: u32 = 0x811c_9dc5;
    for byte in stream_type.bytes().chain([b'/']).chain(stream_id.bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash % partitions
}

/// One position per feed partition: everything at or before it has been read.
///
/// Kept without trailing zeros, so equal cursors compare and hash equal.
///
/// Missing partitions are at 0, so the start of any feed is [`FeedCursor::start`], and a
/// one-partition cursor written as `42` stays valid when read by a reader of any feed.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct FeedCursor {
    positions: Vec<u64>,
}

impl FeedCursor {
    /// Before the first event of every partition.
    pub fn start() -> Self {
        Self::default()
    }

    /// A one-partition cursor (the embedded feed): after `position`.
    pub fn at(position: u64) -> Self {
        Self::of(vec![position])
    }

    /// After `positions[p]` in partition `p`.
    pub fn of(mut positions: Vec<u64>) -> Self {
        while positions.last() == Some(&0) {
            positions.pop();
        }
        Self { positions }
    }

    /// The position reached in `partition` (0: none of it read).
    pub fn position(&self, partition: u32) -> u64 {
        self.positions.get(partition as usize).copied().unwrap_or(0)
    }

    /// The positions, one per partition up to the last one not at 0.
    pub fn positions(&self) -> &[u64] {
        &self.positions
    }

    /// Moves past the event at the packed `global_position` (never backwards).
    pub fn advance(&mut self, global_position: u64) {
        let (partition, position) = unpack(global_position);
        let i = partition as usize;
        if self.positions.len() <= i {
            if position == 0 {
                return;
            }
            self.positions.resize(i + 1, 0);
        }
        self.positions[i] = self.positions[i].max(position);
    }

    /// This cursor moved past every event in `events` that carries a position.
    pub fn after<'a>(&self, events: impl IntoIterator<Item = &'a crate::EventEnvelope>) -> Self {
        let mut next = self.clone();
        for e in events {
            if let Some(p) = e.global_position {
                next.advance(p);
            }
        }
        next
    }

    /// Whether the event at the packed `global_position` is at or before this cursor.
    pub fn includes(&self, global_position: u64) -> bool {
        let (partition, position) = unpack(global_position);
        position <= self.position(partition)
    }

    /// Whether this cursor is at or past `other` in every partition.
    pub fn covers(&self, other: &FeedCursor) -> bool {
        other
            .positions
            .iter()
            .enumerate()
            .all(|(p, &pos)| self.position(p as u32) >= pos)
    }

    /// How many events this cursor has passed, over all partitions.
    pub fn count(&self) -> u64 {
        self.positions.iter().sum()
    }

    /// How many events lie between this cursor and `head` (0 when it is at or past it).
    pub fn behind(&self, head: &FeedCursor) -> u64 {
        head.positions
            .iter()
            .enumerate()
            .map(|(p, &h)| h.saturating_sub(self.position(p as u32)))
            .sum()
    }

    /// The larger position of the two in every partition.
    pub fn max(&self, other: &FeedCursor) -> FeedCursor {
        let len = self.positions.len().max(other.positions.len());
        Self::of(
            (0..len as u32)
                .map(|p| self.position(p).max(other.position(p)))
                .collect(),
        )
    }
}

impl From<u64> for FeedCursor {
    fn from(position: u64) -> Self {
        Self::at(position)
    }
}

impl fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.positions.split_first() {
            None => f.write_str("0"),
            Some((first, rest)) => {
                write!(f, "{first}")?;
                for p in rest {
                    write!(f, ".{p}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for FeedCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeedCursor({self})")
    }
}

/// Why a cursor string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a feed cursor: {0:?} (expected positions separated by dots, like 12 or 12.0.7.3)")]
pub struct BadCursor(pub String);

impl FromStr for FeedCursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCursor(s.chars().take(64).collect());
        let positions = s
            .split('.')
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                p.parse::<u64>()
                    .ok()
                    .filter(|&v| v <= OFFSET_MASK)
                    .ok_or_else(bad)
            })
            .collect::<Result<Vec<u64>, _>>()?;
        if positions.len() > MAX_PARTITIONS as usize {
            return Err(bad());
        }
        Ok(Self::of(positions))
    }
}

impl Serialize for FeedCursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FeedCursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Merges per-partition pages (each in position order) into one feed page of at most `limit`:
/// repeatedly the partition whose next event was committed first (by `occurred_at`, then the
/// lower partition). Each partition's order is kept, so each stream's order is too, and the
/// first `limit` of the merge only needs each partition's first `limit` events.
pub fn merge(
    partitions: Vec<Vec<crate::EventEnvelope>>,
    limit: usize,
) -> Vec<crate::EventEnvelope> {
    let mut out = Vec::with_capacity(limit.min(partitions.iter().map(Vec::len).sum()));
    let mut queues: Vec<std::collections::VecDeque<crate::EventEnvelope>> =
        partitions.into_iter().map(Into::into).collect();
    while out.len() < limit {
        let next = queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.front().map(|e| (e.occurred_at, e.global_position, i)))
            .min();
        match next.and_then(|(.., i)| queues[i].pop_front()) {
            Some(e) => out.push(e),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_one_partition_cursor_is_the_plain_position() {
        assert_eq!(FeedCursor::at(42).to_string(), "42");
        assert_eq!(FeedCursor::start().to_string(), "0");
        assert_eq!("42".parse::<FeedCursor>().unwrap(), FeedCursor::at(42));
        assert_eq!("0".parse::<FeedCursor>().unwrap(), FeedCursor::start());
        assert_eq!(pack(0, 42), 42);
    }

    #[test]
    fn cursors_advance_per_partition_and_compare_by_covering() {
        let mut c = FeedCursor::start();
        c.advance(pack(2, 5));
        c.advance(pack(0, 3));
        c.advance(pack(2, 4));
        assert_eq!(c.to_string(), "3.0.5");
        assert!(c.includes(pack(2, 5)) && !c.includes(pack(1, 1)));
        let head = FeedCursor::of(vec![3, 2, 5, 1]);
        assert_eq!(c.behind(&head), 3);
        assert!(head.covers(&c) && !c.covers(&head));
        assert_eq!(c.max(&FeedCursor::of(vec![1, 1])).to_string(), "3.1.5");
    }

    #[test]
    fn bad_cursors_are_refused() {
        for bad in ["", ".", "1..2", "-1", "1.x", " 1", "1e3", "281474976710656"] {
            assert!(bad.parse::<FeedCursor>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn streams_spread_over_partitions_and_stay_put() {
        let mut seen = [0usize; 4];
        for i in 0..400 {
            let p = partition_of_stream("order", &format!("ord_{i}"), 4);
            assert_eq!(p, partition_of_stream("order", &format!("ord_{i}"), 4));
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        assert_eq!(partition_of_stream("order", "ord_1", 1), 0);
    }

    proptest! {
        #[test]
        fn a_cursor_survives_its_text(positions in proptest::collection::vec(0u64..1_000_000, 0..9)) {
            let c = FeedCursor::of(positions);
            prop_assert_eq!(c.to_string().parse::<FeedCursor>().unwrap(), c.clone());
            let json = serde_json::to_string(&c).unwrap();
            prop_assert_eq!(serde_json::from_str::<FeedCursor>(&json).unwrap(), c);
        }
    }
}

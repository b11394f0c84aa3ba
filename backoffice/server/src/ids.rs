//! Snowflake ids (seed 001 §6.1.2): 41 bits of milliseconds since 2024-01-01, 10 bits of node
//! id, 12 bits of sequence. Ids grow with time, are unique across nodes with distinct node ids,
//! and are sent to clients as decimal strings (JavaScript numbers cannot hold 64 bits).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest node id.
pub const MAX_NODE: u16 = 1023;
/// 2024-01-01T00:00:00Z in Unix milliseconds.
const EPOCH_MS: i64 = 1_704_067_200_000;
const SEQUENCE_BITS: u32 = 12;
const NODE_BITS: u32 = 10;
const MAX_SEQUENCE: i64 = (1 << SEQUENCE_BITS) - 1;

/// A thread-safe id generator for one node.
#[derive(Debug)]
pub struct Snowflake {
    node: i64,
    state: Mutex<(i64, i64)>,
}

impl Snowflake {
    /// A generator for `node` (0..=1023; larger values are masked).
    pub fn new(node: u16) -> Snowflake {
        Snowflake {
            node: i64::from(node & MAX_NODE),
            state: Mutex::new((0, 0)),
        }
    }

    /// The next id. When the clock goes backwards, ids keep growing from the last one seen.
    pub fn next(&self) -> i64 {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last_ms, seq) = *state;
        let now = now_ms() - EPOCH_MS;
        let (ms, seq) = if now > last_ms {
            (now, 0)
        } else if seq < MAX_SEQUENCE {
            (last_ms, seq + 1)
        } else {
            // 4096 ids in one millisecond: borrow the next millisecond.
            (last_ms + 1, 0)
        };
        *state = (ms, seq);
        (ms << (NODE_BITS + SEQUENCE_BITS)) | (self.node << SEQUENCE_BITS) | seq
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats Unix milliseconds as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time into Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_increasing_and_carry_the_node() {
        let ids_gen = Snowflake::new(7);
        let ids: Vec<i64> = (0..20_000).map(|_| ids_gen.next()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        assert!(ids.iter().all(|id| (id >> SEQUENCE_BITS) & 1023 == 7));
        let digits = ids[0].to_string().len();
        assert!((18..=19).contains(&digits), "{digits} digits");
    }

    #[test]
    fn two_nodes_never_collide() {
        let (a, b) = (Snowflake::new(1), Snowflake::new(2));
        let mut seen = HashSet::new();
        for _ in 0..5_000 {
            assert!(seen.insert(a.next()));
            assert!(seen.insert(b.next()));
        }
    }

    #[test]
    fn times_round_trip() {
        let ms = 1_767_225_600_123;
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

//! The keyset cursor every list shares: the `(timestamp, id)` of the last item of a page,
//! handed to clients as opaque hex text.

use nova_infra::readmodel::{parse_ts, ts, Timestamp};
use uuid::Uuid;

/// A position in a list, newest-first or oldest-first: the page after it starts strictly
/// beyond `(at, id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// A stored timestamp, in the canonical text form of `nova_infra::readmodel`.
    pub at: String,
    pub id: Uuid,
}

/// Longest cursor text any list accepts (longer ones are refused unread).
pub const MAX_CURSOR: usize = 256;

impl Cursor {
    pub fn new(at: Timestamp, id: Uuid) -> Cursor {
        Cursor { at: ts(at.0), id }
    }

    /// Opaque text form: hex of `<at>|<id>`.
    pub fn encode(&self) -> String {
        hex::encode(format!("{}|{}", self.at, self.id))
    }

    /// Parses a cursor produced by [`Cursor::encode`]; `None` for anything else. Only the
    /// canonical timestamp form is accepted: cursors are compared as text with stored values,
    /// so another spelling of the same instant would silently skip or repeat rows.
    pub fn decode(text: &str) -> Option<Cursor> {
        if text.len() > MAX_CURSOR {
            return None;
        }
        let raw = String::from_utf8(hex::decode(text).ok()?).ok()?;
        let (at, id) = raw.split_once('|')?;
        parse_ts(at)?;
        Some(Cursor {
            at: at.to_owned(),
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        let c = Cursor {
            at: "2026-11-23T13:07:41.123456Z".into(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        let not_a_time = hex::encode("yesterday|00000000-0000-0000-0000-000000000000");
        let non_canonical = Cursor {
            at: "2026-11-23T13:07:41Z".into(),
            id: Uuid::now_v7(),
        }
        .encode();
        for bad in [
            "",
            "zz",
            "abc",
            "7c",
            "6162",
            "6869",
            "00ff",
            "é1",
            "not a cursor",
            &"00".repeat(200),
            &"a".repeat(300),
            &not_a_time,
            &non_canonical,
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}

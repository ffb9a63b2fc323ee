//! How read models store values, in one place. Read-model tables are written in a dialect that
//! both engines share (they are reached through sqlx's `Any` driver), so:
//! - **ids** are UUIDs in their canonical text form ([`Id`]);
//! - **timestamps** are UTC text in one fixed-width form, `2026-11-23T13:07:41.123456Z`
//!   ([`ts`], [`Timestamp`]) — fixed width so that text order is time order, which keyset
//!   pagination relies on;
//! - **lists and maps** are JSON text ([`JsonText`]);
//! - **booleans** are integers 0/1 ([`Flag`]).
//!
//! Rows are decoded with `sqlx::FromRow` into these types. A value that does not decode is
//! an error that surfaces (see `nova_queries::QueryError::Corrupt`), never a row silently
//! skipped or a field silently defaulted: a corrupt read model must be noticed and rebuilt.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::any::{AnyTypeInfo, AnyValueRef};
use sqlx::error::BoxDynError;
use sqlx::{Any, Decode, Type};
use uuid::Uuid;

/// The stored text form of a timestamp.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// A timestamp as read models store it.
pub fn ts(t: DateTime<Utc>) -> String {
    t.format(TIMESTAMP_FORMAT).to_string()
}

/// Parses stored (canonical) timestamp text; `None` for anything that is not exactly the
/// canonical spelling of an instant, since another spelling would not compare correctly as text.
pub fn parse_ts(text: &str) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
    (ts(t) == text).then_some(t)
}

macro_rules! text_backed {
    ($ty:ty) => {
        impl Type<Any> for $ty {
            fn type_info() -> AnyTypeInfo {
                <String as Type<Any>>::type_info()
            }
            fn compatible(ty: &AnyTypeInfo) -> bool {
                <String as Type<Any>>::compatible(ty)
            }
        }
    };
}

/// A UUID stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(pub Uuid);

text_backed!(Id);

impl<'r> Decode<'r, Any> for Id {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<'r, Any>>::decode(value)?;
        Ok(Id(Uuid::parse_str(&text).map_err(|e| {
            format!("stored id {text:?} is not a UUID: {e}")
        })?))
    }
}

impl From<Id> for Uuid {
    fn from(id: Id) -> Uuid {
        id.0
    }
}

/// A timestamp stored as canonical text. Displays (and serializes) as that same text, so a
/// value read and written back is unchanged to the byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

text_backed!(Timestamp);

impl<'r> Decode<'r, Any> for Timestamp {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <String as Decode<'r, Any>>::decode(value)?;
        Ok(Timestamp(parse_ts(&text).ok_or_else(|| {
            format!("stored timestamp {text:?} is not in the canonical form")
        })?))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.format(TIMESTAMP_FORMAT).fmt(f)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A value stored as JSON text (lists of ids, media URLs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText<T>(pub T);

impl<T> Type<Any> for JsonText<T> {
    fn type_info() -> AnyTypeInfo {
        <String as Type<Any>>::type_info()
    }
    fn compatible(ty: &AnyTypeInfo) -> bool {
        <String as Type<Any>>::compatible(ty)
    }
}

impl<'r, T: DeserializeOwned> Decode<'r, Any> for JsonText<T> {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&'r str as Decode<'r, Any>>::decode(value)?;
        Ok(JsonText(serde_json::from_str(text).map_err(|e| {
            format!("stored JSON does not have the expected shape: {e}")
        })?))
    }
}

/// A boolean stored as an integer (0 = false, 1 = true).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl Type<Any> for Flag {
    fn type_info() -> AnyTypeInfo {
        <i64 as Type<Any>>::type_info()
    }
    fn compatible(ty: &AnyTypeInfo) -> bool {
        <i64 as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for Flag {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        match <i64 as Decode<'r, Any>>::decode(value)? {
            0 => Ok(Flag(false)),
            1 => Ok(Flag(true)),
            n => Err(format!("stored flag is {n}, not 0 or 1").into()),
        }
    }
}

/// Whether a database error is a value that could not be decoded (a corrupt or mismatched read
/// model) rather than trouble reaching the database.
pub fn is_decode_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_only_in_canonical_form() {
        let t = parse_ts("2026-11-23T13:07:41.123456Z").expect("canonical");
        assert_eq!(ts(t), "2026-11-23T13:07:41.123456Z");
        assert_eq!(Timestamp(t).to_string(), "2026-11-23T13:07:41.123456Z");
        for other in [
            "2026-11-23T13:07:41Z",
            "2026-11-23T13:07:41.123456+00:00",
            "2026-11-23 13:07:41.123456Z",
            "yesterday",
        ] {
            assert_eq!(parse_ts(other), None, "{other}");
        }
    }
}

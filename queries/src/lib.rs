//! Read-side handlers over projections. Each domain's reads live in a module named after it;
//! they read only projection tables, never an events table of another domain.
//!
//! Every list shares one vocabulary ([`page`]): a validated [`PageRequest`] in, a [`Page`] out,
//! keyset pagination on `(timestamp, id)` with an opaque [`Cursor`]. Rows are typed
//! (`sqlx::FromRow` over the storage conventions of `nova_infra::readmodel`); a row that does
//! not decode is a [`QueryError::Corrupt`], never silently skipped. Response shapes for HTTP
//! are the edge's business, not this crate's.

pub mod conversation;
pub mod cursor;
pub mod experiment;
pub mod feed;
pub mod follow;
pub mod notification;
pub mod page;
pub mod post;
pub mod search;
pub mod stream;
pub mod user;

pub use cursor::Cursor;
pub use page::{Page, PageRequest};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The read-model database could not be reached or answered with an error.
    #[error("read model unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// A stored value did not decode: the read model is corrupt or from another schema.
    #[error("read model holds a value that does not decode: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        if nova_infra::readmodel::is_decode_error(&e) {
            QueryError::Corrupt(e.to_string())
        } else {
            QueryError::Unavailable(e)
        }
    }
}

//! Read-side handlers over projections. Each domain's reads live in a module named after it;
//! they read only projection tables, never an events table of another domain.

pub mod cursor;
pub mod feed;
pub mod follow;
pub mod notification;
pub mod post;
pub mod user;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("read model unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
}

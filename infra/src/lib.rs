//! Shared infrastructure of Nova: the event store (PostgreSQL and SQLite backends), database
//! connection and migrations, and test support. Domain crates depend on this crate; it knows no
//! domain's rules, only the shape of events (`nova-event-schemas`). Personal data in events is
//! sealed and opened here, by the store, with keys from a source the user domain hands in
//! (`personal`, ADR 0025).

pub mod clock;
pub mod db;
pub mod delivery;
pub mod idempotency;
pub mod limits;
pub mod nats;
pub mod personal;
pub mod readmodel;
pub mod relay;
pub mod search;
pub mod store;
pub mod testing;

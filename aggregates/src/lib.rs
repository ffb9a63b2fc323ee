//! Pure domain logic, one module per domain, each implementing `esrs::Aggregate`.
//!
//! Invariants kept here: `handle_command` decides from the state and the command alone (no
//! clock, no I/O, no randomness — the command handler puts time, ids, hashes and looked-up
//! facts into the command); `apply_event` only records facts and never refuses one.

pub mod conversation;
pub mod experiment;
pub mod follow;
pub mod post;
pub mod stream;
pub mod user;

/// A command's name for spans and logs (`register`, `remove_user`, …), the same snake_case
/// word the ownership matrix uses (`follow.remove_user`). Only the variant is named, never a
/// field: commands carry password and token hashes, which must not reach a log.
pub trait CommandName {
    fn name(&self) -> &'static str;
}

#[cfg(test)]
pub(crate) mod given;

//! The `nova` binary's library: configuration, application assembly and the HTTP edge.
//! `main.rs` only parses the command line and calls into here, so tests drive the same code.

pub mod app;
pub mod boundaries;
pub mod config;
pub mod erasure;
pub mod export;
pub mod facts;
pub mod http;
pub mod timetravel;

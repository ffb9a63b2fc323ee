//! `feed`: per-user home timelines (fan-out on write, read-time merge above a threshold).

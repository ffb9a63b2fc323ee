//! `notification`: per-user notifications with read state and preferences.

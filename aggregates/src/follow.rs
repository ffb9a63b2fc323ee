//! The `follow` domain: the relationship aggregate (follows and blocks between two users).

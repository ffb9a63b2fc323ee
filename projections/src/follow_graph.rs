//! `follow_graph`: follow edges, follower/following lists and counts (from the follow domain).

//! The `post` domain: posts (with edits, comments, shares), likes and bookmarks.

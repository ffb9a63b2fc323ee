//! `post_view`: posts with counters, comments, an author's posts, bookmarks (from the post domain).

-- Owner: post_view projection (read model of the post domain). Text ids and fixed-width
-- RFC 3339 timestamps (as user_directory), BIGINT counters and flags. Must match
-- `PostView::ddl` (a rebuild builds a suffixed copy from it).
CREATE TABLE posts (
    post_id        TEXT   NOT NULL PRIMARY KEY,
    author_id      TEXT   NOT NULL,
    content        TEXT   NOT NULL,
    media_urls     TEXT   NOT NULL,
    mentions       TEXT   NOT NULL,
    created_at     TEXT   NOT NULL,
    edited_at      TEXT,
    visible        BIGINT NOT NULL,
    like_count     BIGINT NOT NULL,
    comment_count  BIGINT NOT NULL,
    share_count    BIGINT NOT NULL
);
CREATE INDEX posts_author_idx ON posts (author_id, created_at, post_id);

CREATE TABLE post_comments (
    comment_id  TEXT NOT NULL PRIMARY KEY,
    post_id     TEXT NOT NULL,
    author_id   TEXT NOT NULL,
    content     TEXT NOT NULL,
    mentions    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX post_comments_post_idx ON post_comments (post_id, created_at, comment_id);

CREATE TABLE post_bookmarks (
    user_id        TEXT NOT NULL,
    post_id        TEXT NOT NULL,
    collection     TEXT,
    bookmarked_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, post_id)
);
CREATE INDEX post_bookmarks_user_idx ON post_bookmarks (user_id, bookmarked_at, post_id);

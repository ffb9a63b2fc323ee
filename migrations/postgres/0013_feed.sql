-- Owner: feed projection (home timelines; reads the user, follow and post domains through its
-- own copies of their facts — no join to any other table). Text ids, fixed-width RFC 3339 text
-- timestamps, BIGINT counters/flags. Must match `nova_projections::feed::Feed::ddl`.
CREATE TABLE feed_follows (
    follower_id  TEXT   NOT NULL,
    followee_id  TEXT   NOT NULL,
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX feed_follows_followee_idx ON feed_follows (followee_id, follower_id);

-- `pulled` is sticky: 1 once `followers` ever reached the fan-out threshold (read-time merge).
CREATE TABLE feed_authors (
    author_id  TEXT   NOT NULL PRIMARY KEY,
    followers  BIGINT NOT NULL,
    pulled     BIGINT NOT NULL,
    active     BIGINT NOT NULL
);
-- Small partial indexes: reads find the few pulled and the few deactivated authors by them.
CREATE INDEX feed_authors_pulled_idx ON feed_authors (author_id) WHERE pulled = 1;
CREATE INDEX feed_authors_inactive_idx ON feed_authors (author_id) WHERE active = 0;

CREATE TABLE feed_posts (
    post_id     TEXT   NOT NULL PRIMARY KEY,
    author_id   TEXT   NOT NULL,
    content     TEXT   NOT NULL,
    media_urls  TEXT   NOT NULL,
    created_at  TEXT   NOT NULL,
    edited_at   TEXT,
    visible     BIGINT NOT NULL
);
CREATE INDEX feed_posts_author_idx ON feed_posts (author_id, created_at, post_id);

CREATE TABLE feed_timeline (
    owner_id    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    post_id     TEXT NOT NULL,
    author_id   TEXT NOT NULL,
    PRIMARY KEY (owner_id, created_at, post_id)
);
-- The primary key is the only index: reads page by owner, unfollow deletes within one owner's
-- rows, and removal of a post deletes by its author's current followers (see `Feed`).

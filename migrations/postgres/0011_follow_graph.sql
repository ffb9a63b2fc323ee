-- Owner: follow_graph projection (read model of the follow domain). Text ids and fixed-width
-- RFC 3339 text timestamps, like user_directory; no foreign keys to any other table.
CREATE TABLE follow_edges (
    follower_id  TEXT NOT NULL,
    followee_id  TEXT NOT NULL,
    followed_at  TEXT NOT NULL,
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX follow_edges_followee_idx ON follow_edges (followee_id, followed_at);
CREATE INDEX follow_edges_follower_idx ON follow_edges (follower_id, followed_at);
CREATE TABLE follow_counts (
    user_id    TEXT   NOT NULL PRIMARY KEY,
    followers  BIGINT NOT NULL,
    following  BIGINT NOT NULL
);

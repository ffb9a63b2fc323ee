-- Owner: notification projection (read model over the user, follow and post domains). Text ids
-- and fixed-width RFC 3339 timestamps; every notification the events call for is stored, and
-- visibility (preferences, blocks) is decided at read time from the history tables below.
CREATE TABLE notification (
    notification_id  TEXT   NOT NULL PRIMARY KEY,
    recipient_id     TEXT   NOT NULL,
    kind             TEXT   NOT NULL,
    actor_id         TEXT   NOT NULL,
    post_id          TEXT,
    comment_id       TEXT,
    created_at       TEXT   NOT NULL
);
CREATE INDEX notification_recipient_idx ON notification (recipient_id, created_at, notification_id);
CREATE INDEX notification_dedup_idx ON notification (recipient_id, actor_id, kind, created_at);
CREATE TABLE notification_post (
    post_id          TEXT   NOT NULL PRIMARY KEY,
    author_id        TEXT   NOT NULL
);
CREATE TABLE notification_mention (
    post_id          TEXT   NOT NULL,
    user_id          TEXT   NOT NULL,
    PRIMARY KEY (post_id, user_id)
);
CREATE TABLE notification_preference (
    user_id          TEXT   NOT NULL,
    kind             TEXT   NOT NULL,
    version          BIGINT NOT NULL,
    changed_at       TEXT   NOT NULL,
    disabled         BIGINT NOT NULL,
    PRIMARY KEY (user_id, kind, version)
);
CREATE TABLE notification_block (
    user_id          TEXT   NOT NULL,
    other_id         TEXT   NOT NULL,
    version          BIGINT NOT NULL,
    blocker_id       TEXT   NOT NULL,
    blocked_at       TEXT   NOT NULL,
    unblocked_at     TEXT,
    PRIMARY KEY (user_id, other_id, version)
);
CREATE TABLE notification_read (
    user_id          TEXT   NOT NULL PRIMARY KEY,
    up_to_created_at TEXT   NOT NULL,
    up_to_id         TEXT   NOT NULL,
    version          BIGINT NOT NULL
);

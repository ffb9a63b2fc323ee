-- Owner: notification projection. `stream_started` notifications (ADR 0017): a broadcaster's
-- followers at the moment a stream went live. The follow and stream domains are projected
-- concurrently live and one after the other in a rebuild, so the view keeps both sides' facts
-- and whichever side arrives second writes the notification (same name-based id either way):
-- follow intervals per (follower, followee) and the streams that went live.
CREATE TABLE notification_follow (
    follower_id     TEXT   NOT NULL,
    followee_id     TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    followed_at     TEXT   NOT NULL,
    unfollowed_at   TEXT,
    PRIMARY KEY (follower_id, followee_id, version)
);
CREATE INDEX notification_follow_followee ON notification_follow (followee_id, followed_at);
CREATE TABLE notification_stream (
    stream_id       TEXT   NOT NULL PRIMARY KEY,
    broadcaster_id  TEXT   NOT NULL,
    event_id        TEXT   NOT NULL,
    started_at      TEXT   NOT NULL
);
CREATE INDEX notification_stream_broadcaster ON notification_stream (broadcaster_id, started_at);
ALTER TABLE notification ADD COLUMN stream_id TEXT;

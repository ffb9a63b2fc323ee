-- The stream domain's own state beside its events (ADR 0017); written and read only by the
-- stream domain's command module (`nova_commands::stream`).
--
-- Stream keys: only the SHA-256 of each key, under a random `key_id` that events name. Written
-- before the event that names it (an append that then fails leaves an unnamed row, which no
-- event names and so never works). Which key of a stream is current is the aggregate's state.
CREATE TABLE stream_keys (
    key_id      TEXT PRIMARY KEY,
    stream_id   TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

-- Presence: one row per (stream, signed-in viewer) while the stream is live. Heartbeats move
-- `last_seen` (batched per process); a viewer counts while `left_at` is null and `last_seen` is
-- less than 60 s old. Rows stay after a viewer leaves (unique viewers) until the stream ends.
CREATE TABLE stream_presence (
    stream_id   TEXT NOT NULL,
    viewer_id   TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    left_at     TEXT,
    PRIMARY KEY (stream_id, viewer_id)
);
CREATE INDEX stream_presence_recent ON stream_presence (stream_id, last_seen);

-- The audience of each live stream: current viewers (recounted on every join and leave, and
-- every second for expiries), the peak of that count, and distinct viewers so far.
CREATE TABLE stream_audience (
    stream_id       TEXT PRIMARY KEY,
    viewers         BIGINT NOT NULL,
    peak_viewers    BIGINT NOT NULL,
    unique_viewers  BIGINT NOT NULL,
    counted_at      TEXT NOT NULL
);
CREATE INDEX stream_audience_by_viewers ON stream_audience (viewers, stream_id);

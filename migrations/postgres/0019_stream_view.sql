-- Owner: stream_view projection (read model over the stream domain). One row per stream as its
-- events tell it; viewer counts of a live stream come from the domain's presence tables, the
-- summary of an ended one from its `ended` event.
CREATE TABLE stream_view (
    stream_id       TEXT   NOT NULL PRIMARY KEY,
    broadcaster_id  TEXT   NOT NULL,
    title           TEXT   NOT NULL,
    description     TEXT,
    -- 'created', 'live' or 'ended'.
    status          TEXT   NOT NULL,
    disabled        BIGINT NOT NULL,
    created_at      TEXT   NOT NULL,
    started_at      TEXT,
    ended_at        TEXT,
    duration_secs   BIGINT,
    peak_viewers    BIGINT,
    unique_viewers  BIGINT,
    last_version    BIGINT NOT NULL
);
CREATE INDEX stream_view_live ON stream_view (status, stream_id);
CREATE INDEX stream_view_broadcaster ON stream_view (broadcaster_id, created_at);

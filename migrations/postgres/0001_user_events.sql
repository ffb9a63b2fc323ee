-- Owner: user domain. Only the user command handlers append here; nothing updates or deletes.
CREATE TABLE user_events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        UUID        NOT NULL UNIQUE,
    aggregate_id    UUID        NOT NULL,
    aggregate_type  TEXT        NOT NULL,
    version         BIGINT      NOT NULL CHECK (version > 0),
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL,
    payload         JSONB       NOT NULL,
    correlation_id  UUID        NOT NULL,
    causation_id    UUID,
    actor_id        UUID,
    request_id      TEXT,
    recorded_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (aggregate_id, version)
);
CREATE INDEX user_events_type_idx ON user_events (event_type, position);

-- Owner: experiment domain. Only the experiment command handlers append here; nothing updates or deletes.
CREATE TABLE experiment_events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        BLOB    NOT NULL UNIQUE,
    aggregate_id    BLOB    NOT NULL,
    aggregate_type  TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    correlation_id  BLOB    NOT NULL,
    causation_id    BLOB,
    actor_id        BLOB,
    request_id      TEXT,
    recorded_at     TEXT    NOT NULL,
    UNIQUE (aggregate_id, version)
);
CREATE INDEX experiment_events_type_idx ON experiment_events (event_type, position);

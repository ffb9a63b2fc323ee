-- Owner: event store. Idempotency of commands across crashes: a command sent with an
-- Idempotency-Key records its (opaque, keyed-hash) command key here in the same transaction
-- that appends its events, so a retry after any crash finds it and appends nothing new.
-- `streams` is JSON: [[aggregate_id, first_version, last_version], ...] of the original append.
CREATE TABLE command_keys (
    domain         TEXT   NOT NULL,
    command_key    TEXT   NOT NULL,
    last_position  BIGINT NOT NULL,
    streams        TEXT   NOT NULL,
    recorded_at    BIGINT NOT NULL,
    PRIMARY KEY (domain, command_key)
);
CREATE INDEX command_keys_recorded_at ON command_keys (recorded_at);

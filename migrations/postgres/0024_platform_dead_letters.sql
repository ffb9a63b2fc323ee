-- Owner: platform (dead letters of the policies, ADR 0023). An event a policy cannot decode or
-- can never handle is parked here — its checkpoint moves past it, so everything after it keeps
-- flowing — until `nova projections retry <policy>` handles it again (and removes the row).
CREATE TABLE dead_letters (
    consumer    TEXT   NOT NULL,
    domain      TEXT   NOT NULL,
    position    BIGINT NOT NULL,
    event_id    TEXT   NOT NULL,
    event_type  TEXT   NOT NULL,
    error       TEXT   NOT NULL,
    attempts    BIGINT NOT NULL,
    parked_at   TEXT   NOT NULL,
    PRIMARY KEY (consumer, domain, position)
);

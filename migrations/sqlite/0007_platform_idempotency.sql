-- Owner: platform (HTTP plumbing). Answers of commands sent with an Idempotency-Key.
CREATE TABLE idempotency_keys (
    actor         TEXT   NOT NULL,
    idem_key      TEXT   NOT NULL,
    request_hash  TEXT   NOT NULL,
    status        BIGINT,
    headers       TEXT,
    body          TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (actor, idem_key)
);

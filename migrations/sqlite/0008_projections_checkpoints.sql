-- Owner: projector runtime. One row per (projection, domain): the last applied position,
-- written in the same transaction as the projection's own rows.
CREATE TABLE projection_checkpoints (
    projection  TEXT   NOT NULL,
    domain      TEXT   NOT NULL,
    position    BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (projection, domain)
);

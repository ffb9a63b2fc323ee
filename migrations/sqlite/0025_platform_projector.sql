-- Owner: projector runtime. The as-of copies of views (ADR 0024): one row per copy of a
-- projection as it stood at an instant. The copy's tables are `<table>__asof<id>` and its
-- checkpoint is `<projection>__asof<id>`; they are created, filled and dropped with this row.
CREATE TABLE projection_as_of (
    id          BIGINT NOT NULL PRIMARY KEY,
    projection  TEXT   NOT NULL,
    as_of       TEXT   NOT NULL,
    state       TEXT   NOT NULL,
    created_at  TEXT   NOT NULL,
    UNIQUE (projection, as_of)
);

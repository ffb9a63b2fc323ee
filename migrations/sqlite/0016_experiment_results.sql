-- Owner: experiment_results projection (read model of the experiment domain). Counters are
-- kept per variant and per (variant, metric), so a results read costs the same at any number
-- of exposures; the per-user rows exist to count each user once and to notice users exposed to
-- two variants (they are excluded and counted in multiple_exposures). No foreign keys.
CREATE TABLE experiment_results (
    experiment_key      TEXT   NOT NULL PRIMARY KEY,
    variants            TEXT   NOT NULL,
    status              TEXT   NOT NULL,
    multiple_exposures  BIGINT NOT NULL,
    created_at          TEXT   NOT NULL
);
CREATE TABLE experiment_variant_users (
    experiment_key  TEXT   NOT NULL,
    variant         TEXT   NOT NULL,
    users           BIGINT NOT NULL,
    PRIMARY KEY (experiment_key, variant)
);
CREATE TABLE experiment_metric_conversions (
    experiment_key  TEXT   NOT NULL,
    variant         TEXT   NOT NULL,
    metric          TEXT   NOT NULL,
    conversions     BIGINT NOT NULL,
    PRIMARY KEY (experiment_key, variant, metric)
);
CREATE TABLE experiment_participants (
    experiment_key  TEXT   NOT NULL,
    user_id         TEXT   NOT NULL,
    variant         TEXT   NOT NULL,
    excluded        BIGINT NOT NULL,
    PRIMARY KEY (experiment_key, user_id)
);
CREATE INDEX experiment_participants_user_idx ON experiment_participants (user_id);
CREATE TABLE experiment_conversions (
    experiment_key  TEXT   NOT NULL,
    user_id         TEXT   NOT NULL,
    metric          TEXT   NOT NULL,
    PRIMARY KEY (experiment_key, user_id, metric)
);

-- Owner: platform (projection rebuilds, ADR 0006). While a projection is being rebuilt, its
-- row names the process that rebuilds it and until when (ms since the epoch) that holds; the
-- holder renews it after every batch and inside the swap, so a second process cannot rebuild
-- the same projection at once, and a crashed holder's lease simply expires.
CREATE TABLE rebuild_leases (
    projection   TEXT   NOT NULL PRIMARY KEY,
    owner        TEXT   NOT NULL,
    lease_until  BIGINT NOT NULL
);

-- Owner: relay (delivery to NATS JetStream). Per domain, the last position whose publish was
-- acknowledged by JetStream, and the lease of the one relay process allowed to publish.
CREATE TABLE relay_checkpoints (
    domain       TEXT   NOT NULL PRIMARY KEY,
    position     BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    owner        TEXT,
    lease_until  BIGINT NOT NULL
);

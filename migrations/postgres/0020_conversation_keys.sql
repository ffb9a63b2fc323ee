-- Owner: conversation domain (the key server, ADR 0020). Public keys only: a device's identity
-- keys with the signature the server verified, its signed one-time keys and its one fallback
-- key. Private keys never reach the server. Read and written only by the conversation
-- domain's command module (`nova_commands::conversation::keys`); not event-sourced.
CREATE TABLE conversation_devices (
    user_id         TEXT   NOT NULL,
    device_id       TEXT   NOT NULL,
    curve25519      TEXT   NOT NULL,
    ed25519         TEXT   NOT NULL,
    signature       TEXT   NOT NULL,
    created_at      TEXT   NOT NULL,
    -- The position the next to-device message for this device gets. Taken under the row's
    -- lock by the sending transaction, so positions commit in order per device.
    to_device_next  BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys in upload order (`seq`). A claimed key keeps its row (`claimed_at` set) so
-- that its id can never be uploaded and handed out again while the device exists.
CREATE TABLE conversation_one_time_keys (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     TEXT   NOT NULL,
    device_id   TEXT   NOT NULL,
    key_id      TEXT   NOT NULL,
    key         TEXT   NOT NULL,
    signature   TEXT   NOT NULL,
    uploaded_at TEXT   NOT NULL,
    claimed_at  TEXT,
    UNIQUE (user_id, device_id, key_id)
);

CREATE INDEX conversation_one_time_keys_unclaimed
    ON conversation_one_time_keys (user_id, device_id, seq) WHERE claimed_at IS NULL;

-- At most one fallback key per device; a new upload replaces it. Handed out (repeatedly)
-- only when no one-time key is left.
CREATE TABLE conversation_fallback_keys (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    signature   TEXT NOT NULL,
    uploaded_at TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

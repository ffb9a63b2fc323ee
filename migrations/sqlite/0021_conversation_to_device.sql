-- Owner: conversation domain (the to-device queue, ADR 0020). Opaque client payloads (e.g. an
-- Olm envelope carrying a Megolm room key) waiting for one device, in arrival order
-- (`position`, per device, gap-free: taken from `conversation_devices.to_device_next` in the
-- sending transaction). Deleted when the device acknowledges them, or with the device. Not
-- event-sourced: ciphertext in transit has no place in an immutable history.
CREATE TABLE conversation_to_device (
    user_id          TEXT   NOT NULL,
    device_id        TEXT   NOT NULL,
    position         BIGINT NOT NULL,
    sender_user_id   TEXT   NOT NULL,
    sender_device_id TEXT,
    content          TEXT   NOT NULL,
    created_at       TEXT   NOT NULL,
    PRIMARY KEY (user_id, device_id, position)
);

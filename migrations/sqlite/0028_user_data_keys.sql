-- The user domain's data keys (ADR 0025): one per user, sealing that user's personal data in
-- events (ChaCha20-Poly1305; events carry the key id, never the key). Erasure destroys the key:
-- `secret` becomes NULL and `erased_at` is set, so the user's sealed fields read as erased and no
-- key is made for them again. Read and written only by the user domain's command module.
CREATE TABLE user_data_keys (
    user_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    -- 32 random bytes, hex; NULL once erased.
    secret TEXT,
    created_at TEXT NOT NULL,
    erased_at TEXT
);

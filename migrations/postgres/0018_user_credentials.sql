-- The user domain's credentials (ADR 0016): password hashes (argon2id, or an imported account's
-- legacy SHA-256) and refresh-token hashes. Events name a credential by `credential_id` and
-- never carry the secret. Written before the event that names the credential (an append that
-- then fails leaves an unnamed row, which nothing reads); read and written only by the user
-- domain's command module.
CREATE TABLE user_credentials (
    credential_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    -- 'password' or 'refresh_token'.
    kind TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX user_credentials_by_secret ON user_credentials (user_id, kind, secret);

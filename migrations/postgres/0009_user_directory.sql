-- Owner: user_directory projection (read model of the user domain). Text ids, because other
-- domains read it by id, never join to it.
CREATE TABLE user_directory (
    user_id              TEXT   NOT NULL PRIMARY KEY,
    username             TEXT   NOT NULL,
    display_name         TEXT,
    status               TEXT,
    profile_picture_url  TEXT,
    active               BIGINT NOT NULL,
    created_at           TEXT   NOT NULL,
    updated_at           TEXT   NOT NULL,
    last_version         BIGINT NOT NULL
);
CREATE INDEX user_directory_username_idx ON user_directory (username);

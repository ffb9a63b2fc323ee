-- Owner: conversation_view projection (from the conversation domain). Rebuildable from
-- conversation_events. Ciphertext only: the server never sees a plaintext.

-- One row per (member, conversation): what the member's conversation list shows. `state` is
-- 'active', 'request' (a message request to this member), 'declined' or 'left'.
CREATE TABLE conversation_list (
    user_id          TEXT   NOT NULL,
    conversation_id  TEXT   NOT NULL,
    kind             TEXT   NOT NULL,
    name             TEXT,
    state            TEXT   NOT NULL,
    last_activity_at TEXT   NOT NULL,
    last_seq         BIGINT NOT NULL,
    read_seq         BIGINT NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
);

CREATE INDEX conversation_list_by_activity
    ON conversation_list (user_id, last_activity_at, conversation_id);
CREATE INDEX conversation_list_by_conversation ON conversation_list (conversation_id);

-- The messages of a conversation by seq. A recalled message keeps its row without ciphertext;
-- `history` holds the replaced ciphertexts of edits (JSON list).
CREATE TABLE conversation_messages (
    conversation_id   TEXT   NOT NULL,
    seq               BIGINT NOT NULL,
    message_id        TEXT   NOT NULL,
    sender_id         TEXT   NOT NULL,
    sender_device_id  TEXT   NOT NULL,
    session_id        TEXT   NOT NULL,
    ciphertext        TEXT,
    client_message_id TEXT   NOT NULL,
    sent_at           TEXT   NOT NULL,
    edited_at         TEXT,
    recalled          BIGINT NOT NULL,
    history           TEXT   NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE conversation_reactions (
    conversation_id TEXT   NOT NULL,
    seq             BIGINT NOT NULL,
    user_id         TEXT   NOT NULL,
    emoji           TEXT   NOT NULL,
    PRIMARY KEY (conversation_id, seq, user_id, emoji)
);

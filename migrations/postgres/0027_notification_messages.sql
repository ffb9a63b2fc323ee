-- Owner: notification projection. `message` notifications (ADR 0021): a message notifies the
-- conversation's other members at the moment it was sent. Membership comes from the
-- conversation domain alone, whose events arrive in order per conversation, so the view keeps
-- its own copy of who is in each conversation: one row per current member, `pending` while
-- that member has a message request they have not accepted (a request does not notify).
CREATE TABLE notification_conversation (
    conversation_id TEXT   NOT NULL,
    user_id         TEXT   NOT NULL,
    pending         BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
ALTER TABLE notification ADD COLUMN conversation_id TEXT;

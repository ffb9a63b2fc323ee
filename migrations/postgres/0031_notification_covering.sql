-- Owner: notification projection. The list and the unread count read a recipient's rows in
-- (created_at, notification_id) order and test kind and actor against the recipient's
-- preference and block histories (queries::notification); with those two columns in the index
-- a count reads the index alone. It replaces the index it extends.
DROP INDEX notification_recipient_idx;
CREATE INDEX notification_recipient_idx
    ON notification (recipient_id, created_at, notification_id, kind, actor_id);

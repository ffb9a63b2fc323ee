-- Owner: notification projection. Each recipient's unread count, kept by the projector in the
-- transactions that change what it counts (ADR 0028): a row counts if its kind was on at its
-- time, no block hides it, and it comes after its recipient's read marker — the rule the list
-- applies at read time (queries::notification::{visible_row, unread_row}). Reading the count
-- is one row, however long the history. Filled here from the rows already projected.
CREATE TABLE notification_unread (
    recipient_id     TEXT   NOT NULL PRIMARY KEY,
    unread           BIGINT NOT NULL
);
INSERT INTO notification_unread (recipient_id, unread)
SELECT n.recipient_id, COUNT(*) FROM notification n
WHERE COALESCE((SELECT p.disabled FROM notification_preference p
                WHERE p.user_id = n.recipient_id AND p.kind = n.kind
                  AND p.changed_at <= n.created_at
                ORDER BY p.version DESC LIMIT 1), 0) = 0
  AND NOT EXISTS (SELECT 1 FROM notification_block b
                  WHERE b.user_id = n.recipient_id AND b.other_id = n.actor_id
                    AND (b.unblocked_at IS NULL
                         OR (b.blocked_at <= n.created_at AND n.created_at < b.unblocked_at)))
  AND NOT EXISTS (SELECT 1 FROM notification_read r
                  WHERE r.user_id = n.recipient_id
                    AND (n.created_at, n.notification_id) <= (r.up_to_created_at, r.up_to_id))
GROUP BY n.recipient_id;

-- Owner: notification projection. People whose personal data was erased (ADR 0025): the view
-- drops every notification they caused or received when it applies `user.erased`, and writes
-- none for them afterwards. The user domain and the domains that cause notifications are
-- projected concurrently live and one after the other in a rebuild, so the erasure is kept as
-- a fact of the view and checked before every write: live and rebuilt views agree.
CREATE TABLE notification_erased (
    user_id         TEXT   NOT NULL PRIMARY KEY
);

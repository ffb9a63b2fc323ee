-- Owner: event store (ADR 0027). One function per domain, `nova_append_<domain>`, that commits
-- a whole group-commit batch in one statement, so the domain's advisory lock is never held
-- across a network round trip: called outside a transaction, the statement is its own
-- transaction, and the lock is released by its commit.
--
-- The store decides the batch in Rust (`store::decide_batch`) against *assumed* facts: the
-- current version of every aggregate the batch touches and "none of its command keys is
-- recorded". Under the lock the function checks those facts, which is all the decision depends
-- on:
-- - they hold: it inserts the accepted requests' events and command keys and returns one row
--   per event (kind 0: event id, position);
-- - they do not: it writes nothing and returns the facts as they are (kind 1: aggregate id and
--   current version, for every aggregate given; kind 2: each recorded key with its record), and
--   the store decides again with them.
--
-- The functions are generated from one template; each has static SQL (plans are cached per
-- connection) and names its domain's table only.
DO $generate$
DECLARE
    d TEXT;
BEGIN
    FOREACH d IN ARRAY ARRAY['user', 'follow', 'conversation', 'post', 'stream', 'experiment'] LOOP
        EXECUTE format($template$
CREATE FUNCTION %1$I(
    p_lock BIGINT,
    p_domain TEXT,
    p_check_ids UUID[],
    p_check_versions INT8[],
    p_keys TEXT[],
    p_event_ids UUID[],
    p_aggregate_ids UUID[],
    p_aggregate_types TEXT[],
    p_versions INT8[],
    p_event_types TEXT[],
    p_schema_versions INT4[],
    p_payloads JSONB[],
    p_correlation_ids UUID[],
    p_causation_ids UUID[],
    p_actor_ids UUID[],
    p_request_ids TEXT[],
    p_recorded_ats TIMESTAMPTZ[],
    p_owners INT4[],
    p_key_names TEXT[],
    p_key_owners INT4[],
    p_key_streams TEXT[],
    p_key_recorded_at BIGINT
) RETURNS TABLE (o_kind SMALLINT, o_id UUID, o_key TEXT, o_n BIGINT, o_streams TEXT)
LANGUAGE plpgsql VOLATILE AS $body$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    -- A fresh snapshot per statement (READ COMMITTED): these reads see every batch committed
    -- before the lock was granted.
    IF EXISTS (
        SELECT 1 FROM unnest(p_check_ids, p_check_versions) AS c(id, v)
         WHERE COALESCE((SELECT e.version FROM %2$I e WHERE e.aggregate_id = c.id
                          ORDER BY e.version DESC LIMIT 1), 0) <> c.v)
       OR (cardinality(p_keys) > 0 AND EXISTS (
        SELECT 1 FROM command_keys k WHERE k.domain = p_domain AND k.command_key = ANY (p_keys)))
    THEN
        RETURN QUERY
            SELECT 1::SMALLINT, c.id, NULL::TEXT,
                   COALESCE((SELECT e.version FROM %2$I e WHERE e.aggregate_id = c.id
                              ORDER BY e.version DESC LIMIT 1), 0)::BIGINT,
                   NULL::TEXT
              FROM unnest(p_check_ids) AS c(id)
            UNION ALL
            SELECT 2::SMALLINT, NULL::UUID, k.command_key, k.last_position, k.streams
              FROM command_keys k
             WHERE k.domain = p_domain AND k.command_key = ANY (p_keys);
        RETURN;
    END IF;
    RETURN QUERY
        INSERT INTO %2$I (event_id, aggregate_id, aggregate_type, version, event_type,
                          schema_version, payload, correlation_id, causation_id, actor_id,
                          request_id, recorded_at)
        SELECT * FROM unnest(p_event_ids, p_aggregate_ids, p_aggregate_types, p_versions,
                             p_event_types, p_schema_versions, p_payloads, p_correlation_ids,
                             p_causation_ids, p_actor_ids, p_request_ids, p_recorded_ats)
        RETURNING 0::SMALLINT, event_id, NULL::TEXT, position, NULL::TEXT;
    -- Most batches carry no command key. The keys of the others are recorded with the last
    -- position of their request, read back from the rows just inserted (same transaction).
    IF cardinality(p_key_names) > 0 THEN
        INSERT INTO command_keys (domain, command_key, last_position, streams, recorded_at)
        SELECT p_domain, k.name,
               COALESCE((SELECT max(e.position)
                           FROM unnest(p_event_ids, p_owners) AS o(event_id, owner)
                           JOIN %2$I e ON e.event_id = o.event_id
                          WHERE o.owner = k.owner), 0),
               k.streams, p_key_recorded_at
          FROM unnest(p_key_names, p_key_owners, p_key_streams) AS k(name, owner, streams);
    END IF;
END
$body$
$template$, 'nova_append_' || d, d || '_events');
    END LOOP;
END
$generate$;

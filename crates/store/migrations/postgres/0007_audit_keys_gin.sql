-- carevault schema, version 7 (PostgreSQL): a segment's search keys move from rows of
-- audit_keys (one per key) into one array per segment, audit_segment_keys, under a GIN index.
-- SQLite keeps its audit_keys rows (../sqlite/0007_audit_keys_gin.sql changes nothing).
--
-- A row per key cost about 145 bytes here (a heap tuple header and line pointer, the tenant
-- and segment again, a B-tree entry): 313 of the trail's 439 bytes per record. An array costs
-- 8 bytes a key, and the GIN index keeps each key once with a compressed list of the rows
-- holding it.
--
-- A search asks for the segments whose array holds all its keys (`keys @> ARRAY[...]`), newest
-- first, through carevault_audit_segments_with_keys below. It cannot ask the table directly:
-- under row-level security the planner may evaluate only LEAKPROOF operators before the
-- policy, and `@>` is not, so the server's role would never reach the GIN index and would open
-- every array of the tenant instead. The function runs as the table's owner, which the policy
-- does not bind here (row-level security is enabled but not forced on this table, unlike the
-- other tenant tables, and this function is the reason), and applies the policy's condition
-- itself: the same tenant setting, nothing when it is unset. It returns only sequence
-- numbers; the caller then reads the segments under their own forced policy, so a wrong
-- number could not reveal another tenant's records either. The table has no B-tree index:
-- without statistics the planner would walk one and open every array on its way, so the GIN
-- index is the only way in, and the function keeps the planner off the sequential scan.
--
-- The keys are guarded like the segments: the server's role may only SELECT (under the
-- policy) and INSERT (granted by the store's migrate); triggers refuse UPDATE and TRUNCATE to
-- everyone, and DELETE unless a retention marker of the tenant covers the key's segment.

CREATE TABLE audit_segment_keys (
    tenant_id uuid     NOT NULL,
    first_seq bigint   NOT NULL,
    keys      bigint[] NOT NULL
);
-- Digests are random 64-bit numbers: compressing them saves nothing, so do not try.
ALTER TABLE audit_segment_keys ALTER COLUMN keys SET STORAGE EXTERNAL;

-- The existing keys, as the owner: audit_keys' forced policy would hide every row from an
-- owner that is not a superuser, so it is lifted first (the table is dropped right after).
ALTER TABLE audit_keys NO FORCE ROW LEVEL SECURITY;
INSERT INTO audit_segment_keys (tenant_id, first_seq, keys)
    SELECT tenant_id, first_seq, array_agg(key ORDER BY key)
    FROM audit_keys
    GROUP BY tenant_id, first_seq
    ORDER BY tenant_id, first_seq;
DROP TABLE audit_keys;

-- A segment's keys (about 1,100 for 512 records) go to the index's pending list, which is merged
-- into the index when it reaches gin_pending_list_limit, by the insert that crosses it (or by
-- autovacuum); every look-up reads the whole pending list. Measured replaying the 4,909
-- segments of a 2,000,000-record trail, one commit each: without a pending list
-- (fastupdate = off) the index cost 4.3 ms per commit, 3.5 times as much in all as with one.
-- With the default 4 MB list, one commit in 210 stalled about 200 ms for the merge, and a
-- search's look-ups took 1.0 ms instead of 0.2 ms with the list empty. With 1 MB the inserts
-- cost 9 % more in all, one commit in 53 stalls about 65 ms, and a look-up reads at most 128
-- pages of pending list; 512 kB cost 22 % more.
CREATE INDEX audit_segment_keys_by_key ON audit_segment_keys USING gin (keys)
    WITH (gin_pending_list_limit = 1024);

CREATE TRIGGER audit_segment_keys_no_update BEFORE UPDATE ON audit_segment_keys
    FOR EACH ROW EXECUTE FUNCTION carevault_refuse_audit_change();
CREATE TRIGGER audit_segment_keys_no_delete BEFORE DELETE ON audit_segment_keys
    FOR EACH ROW EXECUTE FUNCTION carevault_refuse_unretained_delete('first_seq');
CREATE TRIGGER audit_segment_keys_no_truncate BEFORE TRUNCATE ON audit_segment_keys
    FOR EACH STATEMENT EXECUTE FUNCTION carevault_refuse_audit_change();

ALTER TABLE audit_segment_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_segment_keys
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);

-- The function's search path is pinned to this schema, then pg_temp (last, so that no
-- temporary table of the caller's can stand in for audit_segment_keys).
SELECT set_config('search_path', quote_ident(current_schema()) || ', pg_temp', true);

-- The first sequence numbers of the current tenant's segments before `before_seq` whose keys
-- include every one of `wanted`, newest first, at most `how_many`.
CREATE FUNCTION carevault_audit_segments_with_keys(
    wanted bigint[], before_seq bigint, how_many bigint
) RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path FROM CURRENT
SET enable_seqscan = off
AS $$
    SELECT first_seq FROM audit_segment_keys
    WHERE tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid
      AND keys @> wanted AND first_seq < before_seq
    ORDER BY first_seq DESC
    LIMIT how_many
$$;
-- EXECUTE is granted to the server's role by the store's migrate, to nobody else.
REVOKE ALL ON FUNCTION carevault_audit_segments_with_keys(bigint[], bigint, bigint) FROM PUBLIC;

-- carevault schema, version 6 (PostgreSQL): the audit trail in segments. Keep the shape
-- identical to ../sqlite/0006_audit_segments.sql, which explains the tables.
--
-- As for every audit table: forced row-level security by tenant; the server's role may only
-- SELECT and INSERT (granted by the store's migrate); triggers refuse UPDATE and TRUNCATE to
-- everyone, and DELETE unless a retention marker of the tenant already covers the row. Retention
-- runs as the schema owner (the server's role has no DELETE privilege at all).

DROP INDEX audit_log_by_time;
DROP INDEX audit_log_by_principal;
DROP INDEX audit_log_by_session;
DROP INDEX audit_log_by_source;
ALTER TABLE audit_log RENAME TO audit_log_v5;
-- The store moves these rows into segments as the owner, tenant by tenant, right after this.
ALTER TABLE audit_log_v5 NO FORCE ROW LEVEL SECURITY;
DROP TABLE audit_subjects;

CREATE TABLE audit_segments (
    tenant_id   uuid   NOT NULL,
    first_seq   bigint NOT NULL CHECK (first_seq >= 1),
    last_seq    bigint NOT NULL CHECK (last_seq >= first_seq),
    min_time_ms bigint NOT NULL,
    max_time_ms bigint NOT NULL,
    prev_hash   bytea  NOT NULL CHECK (length(prev_hash) = 32),
    body        bytea  NOT NULL,
    PRIMARY KEY (tenant_id, first_seq)
);
-- Bodies are compressed already: store them as they are.
ALTER TABLE audit_segments ALTER COLUMN body SET STORAGE EXTERNAL;

CREATE TABLE audit_keys (
    tenant_id uuid   NOT NULL,
    bucket    bigint NOT NULL,
    key       bigint NOT NULL,
    first_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, bucket, key, first_seq)
);

CREATE TABLE audit_retention (
    tenant_id   uuid   NOT NULL,
    through_seq bigint NOT NULL,
    marker      text   NOT NULL,
    PRIMARY KEY (tenant_id, through_seq)
);

-- The trigger's argument names the column that must be covered by a marker: a segment's last
-- sequence number, a key's segment.
CREATE FUNCTION carevault_refuse_unretained_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_retention AS r
                   WHERE r.tenant_id = OLD.tenant_id
                     AND r.through_seq >= (to_jsonb(OLD) ->> TG_ARGV[0])::bigint) THEN
        RAISE EXCEPTION 'audit records cannot be deleted (only retention removes them)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER audit_segments_no_update BEFORE UPDATE ON audit_segments
    FOR EACH ROW EXECUTE FUNCTION carevault_refuse_audit_change();
CREATE TRIGGER audit_segments_no_delete BEFORE DELETE ON audit_segments
    FOR EACH ROW EXECUTE FUNCTION carevault_refuse_unretained_delete('last_seq');
CREATE TRIGGER audit_segments_no_truncate BEFORE TRUNCATE ON audit_segments
    FOR EACH STATEMENT EXECUTE FUNCTION carevault_refuse_audit_change();

CREATE TRIGGER audit_keys_no_update BEFORE UPDATE ON audit_keys
    FOR EACH ROW EXECUTE FUNCTION carevault_refuse_audit_change();
CREATE TRIGGER audit_keys_no_delete BEFORE DELETE ON audit_keys
    FOR EACH ROW EXECUTE FUNCTION carevault_refuse_unretained_delete('first_seq');
CREATE TRIGGER audit_keys_no_truncate BEFORE TRUNCATE ON audit_keys
    FOR EACH STATEMENT EXECUTE FUNCTION carevault_refuse_audit_change();

CREATE TRIGGER audit_retention_no_update BEFORE UPDATE OR DELETE ON audit_retention
    FOR EACH ROW EXECUTE FUNCTION carevault_refuse_audit_change();
CREATE TRIGGER audit_retention_no_truncate BEFORE TRUNCATE ON audit_retention
    FOR EACH STATEMENT EXECUTE FUNCTION carevault_refuse_audit_change();

ALTER TABLE audit_segments ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_segments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_segments
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);

ALTER TABLE audit_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_keys
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);

ALTER TABLE audit_retention ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_retention FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_retention
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);

-- carevault schema, version 4 (PostgreSQL): indexes for the security officer's search of the
-- audit trail. Keep the shape identical to ../sqlite/0004_audit_search.sql.
--
-- audit_log gains the principal, session (token or session id) and source address of each
-- record as columns, copied from the record's JSON by the appending transaction, each indexed
-- with the sequence number so a search by any of them walks an index newest first.
-- audit_subjects lists, for each record, every patient whose data it touched: one row per
-- (record, patient), written in the same transaction as the record, so a search by patient
-- reads only that patient's rows. Both hold ids only, like the records they come from.
-- audit_subjects is a tenant table like audit_log: forced row-level security, and the server's
-- role may only SELECT and INSERT (granted by the store's migrate), with a trigger refusing
-- UPDATE, DELETE and TRUNCATE for everyone else.
--
-- Rows that predate this version are filled in here, from their records. The columns are not
-- covered by the hash chain (it covers `record`), so filling them does not change any link;
-- the owner's guards on audit_log (forced row-level security, the no-update trigger) are
-- lifted only inside this migration's transaction and put back as they were.

ALTER TABLE audit_log ADD COLUMN principal text;
ALTER TABLE audit_log ADD COLUMN session text;
ALTER TABLE audit_log ADD COLUMN source text;

CREATE TABLE audit_subjects (
    tenant_id uuid   NOT NULL,
    patient   text   NOT NULL,
    seq       bigint NOT NULL,
    PRIMARY KEY (tenant_id, patient, seq)
);

ALTER TABLE audit_log NO FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
UPDATE audit_log SET
    principal = record::jsonb ->> 'principal',
    session = record::jsonb ->> 'session',
    source = record::jsonb ->> 'source';
INSERT INTO audit_subjects (tenant_id, patient, seq)
    SELECT audit_log.tenant_id, subject.patient, audit_log.seq
    FROM audit_log
    CROSS JOIN LATERAL jsonb_array_elements_text(audit_log.record::jsonb -> 'subjects')
        AS subject (patient)
    ON CONFLICT DO NOTHING;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;

CREATE INDEX audit_log_by_principal ON audit_log (tenant_id, principal, seq);
CREATE INDEX audit_log_by_session ON audit_log (tenant_id, session, seq) WHERE session IS NOT NULL;
CREATE INDEX audit_log_by_source ON audit_log (tenant_id, source, seq) WHERE source IS NOT NULL;

CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE OR DELETE ON audit_subjects
    FOR EACH ROW EXECUTE FUNCTION carevault_refuse_audit_change();
CREATE TRIGGER audit_subjects_no_truncate BEFORE TRUNCATE ON audit_subjects
    FOR EACH STATEMENT EXECUTE FUNCTION carevault_refuse_audit_change();

ALTER TABLE audit_subjects ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_subjects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_subjects
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);

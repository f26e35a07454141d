-- carevault schema, version 4 (SQLite): indexes for the security officer's search of the audit
-- trail. Keep the shape identical to ../postgres/0004_audit_search.sql.
--
-- audit_log gains the principal, session (token or session id) and source address of each
-- record as columns, copied from the record's JSON by the appending transaction, each indexed
-- with the sequence number so a search by any of them walks an index newest first.
-- audit_subjects lists, for each record, every patient whose data it touched: one row per
-- (record, patient), written in the same transaction as the record, so a search by patient
-- reads only that patient's rows. Both hold ids only, like the records they come from.
--
-- Rows that predate this version are filled in here, from their records. The columns are not
-- covered by the hash chain (it covers `record`), so filling them does not change any link;
-- the guard against changing audit rows is lifted only inside this migration's transaction
-- and put back as it was.

ALTER TABLE audit_log ADD COLUMN principal TEXT;
ALTER TABLE audit_log ADD COLUMN session TEXT;
ALTER TABLE audit_log ADD COLUMN source TEXT;

DROP TRIGGER audit_log_no_update;
UPDATE audit_log SET
    principal = json_extract(record, '$.principal'),
    session = json_extract(record, '$.session'),
    source = json_extract(record, '$.source');
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be changed');
END;

CREATE INDEX audit_log_by_principal ON audit_log (tenant_id, principal, seq);
CREATE INDEX audit_log_by_session ON audit_log (tenant_id, session, seq) WHERE session IS NOT NULL;
CREATE INDEX audit_log_by_source ON audit_log (tenant_id, source, seq) WHERE source IS NOT NULL;

CREATE TABLE audit_subjects (
    tenant_id BLOB    NOT NULL,
    patient   TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, patient, seq)
) STRICT, WITHOUT ROWID;

INSERT OR IGNORE INTO audit_subjects (tenant_id, patient, seq)
    SELECT audit_log.tenant_id, subject.value, audit_log.seq
    FROM audit_log, json_each(audit_log.record, '$.subjects') AS subject;

CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE ON audit_subjects
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be changed');
END;

CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_subjects
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be deleted');
END;

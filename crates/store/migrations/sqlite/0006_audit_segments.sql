-- carevault schema, version 6 (SQLite): the audit trail in segments. Keep the shape identical
-- to ../postgres/0006_audit_segments.sql; `audit_segment.rs` describes the body.
--
-- audit_segments holds one row per append per tenant: the sequence numbers it covers, the time
-- span of its records, the chain hash before its first record, and the compressed body (every
-- record's text, time and chain hash). audit_keys lists, once per segment, each search key of
-- its records (a 64-bit digest of a patient, principal, session, source address, action or
-- outcome), grouped in buckets of 8,192 sequence numbers (`bucket = first_seq >> 13`) so that
-- each commit's random keys land in one small subtree rather than all over the index. audit_retention keeps the signed marker retention leaves in place of the segments
-- it removed.
--
-- Nothing may change a stored row. Deleting is refused unless a retention marker of the same
-- tenant already covers the row, so the only way out of the trail is retention's: write the
-- marker (signed with a key the database never holds), then delete whole segments up to it.
--
-- The rows of version 5 (audit_log, one row per record) are moved into segments by the store
-- right after this migration (their texts and hashes unchanged, so existing checkpoints still
-- verify); until then they wait in audit_log_v5. audit_subjects is derived and dropped.

DROP INDEX audit_log_by_time;
DROP INDEX audit_log_by_principal;
DROP INDEX audit_log_by_session;
DROP INDEX audit_log_by_source;
ALTER TABLE audit_log RENAME TO audit_log_v5;

DROP TRIGGER audit_subjects_no_update;
DROP TRIGGER audit_subjects_no_delete;
DROP TABLE audit_subjects;

CREATE TABLE audit_segments (
    tenant_id   BLOB    NOT NULL,
    first_seq   INTEGER NOT NULL CHECK (first_seq >= 1),
    last_seq    INTEGER NOT NULL CHECK (last_seq >= first_seq),
    min_time_ms INTEGER NOT NULL,
    max_time_ms INTEGER NOT NULL,
    prev_hash   BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    body        BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, first_seq)
) STRICT;

CREATE TABLE audit_keys (
    tenant_id BLOB    NOT NULL,
    bucket    INTEGER NOT NULL,
    key       INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, bucket, key, first_seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit_retention (
    tenant_id   BLOB    NOT NULL,
    through_seq INTEGER NOT NULL,
    marker      TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, through_seq)
) STRICT;

CREATE TRIGGER audit_segments_no_update BEFORE UPDATE ON audit_segments
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be changed');
END;
CREATE TRIGGER audit_segments_no_delete BEFORE DELETE ON audit_segments
WHEN NOT EXISTS (SELECT 1 FROM audit_retention AS r
                 WHERE r.tenant_id = OLD.tenant_id AND r.through_seq >= OLD.last_seq)
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be deleted (only retention removes them)');
END;

CREATE TRIGGER audit_keys_no_update BEFORE UPDATE ON audit_keys
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be changed');
END;
CREATE TRIGGER audit_keys_no_delete BEFORE DELETE ON audit_keys
WHEN NOT EXISTS (SELECT 1 FROM audit_retention AS r
                 WHERE r.tenant_id = OLD.tenant_id AND r.through_seq >= OLD.first_seq)
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be deleted (only retention removes them)');
END;

CREATE TRIGGER audit_retention_no_update BEFORE UPDATE ON audit_retention
BEGIN
    SELECT RAISE(ABORT, 'retention markers cannot be changed');
END;
CREATE TRIGGER audit_retention_no_delete BEFORE DELETE ON audit_retention
BEGIN
    SELECT RAISE(ABORT, 'retention markers cannot be deleted');
END;

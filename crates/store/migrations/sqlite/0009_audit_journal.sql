-- carevault schema, version 9 (SQLite): the audit journal's watermark, and the records it holds
-- back.
--
-- Read records are made durable in a journal beside the database and chained into the trail
-- in batches (store/src/sqlite/journal.rs). `through_frame` is the last journal frame the
-- database holds; it moves in the same transaction as the records it covers, so a crash
-- between that commit and the deletion of the journal files replays nothing twice.
--
-- A tenant whose records cannot be chained (its chain is damaged) does not hold up the others
-- or the journal: its records are kept here, per journal frame, unchained, in the same
-- transaction that chains everyone else's, and are chained (and removed from here) by the
-- first ingestion that can.
CREATE TABLE audit_journal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    through_frame INTEGER NOT NULL CHECK (through_frame >= 0)
);
INSERT INTO audit_journal (id, through_frame) VALUES (1, 0);

CREATE TABLE audit_journal_held (
    tenant_id BLOB NOT NULL,
    frame INTEGER NOT NULL,
    records BLOB NOT NULL,
    PRIMARY KEY (tenant_id, frame)
) WITHOUT ROWID;

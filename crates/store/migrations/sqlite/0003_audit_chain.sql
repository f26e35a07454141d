-- carevault schema, version 3 (SQLite): the audit hash chain. Keep the shape identical to
-- ../postgres/0003_audit_chain.sql. (Version 2 is the identity work's; the migrator applies
-- whichever is missing, so neither depends on the other.)
--
-- audit_log.prev_hash and audit_log.hash (reserved in version 1) now hold each record's link:
-- hash = SHA-256("carevault/audit-chain/v1\0" || prev_hash || record). The head row keeps the
-- hash after its last record, so an append chains on without reading the log. NULL means
-- "before hashing began" (records of version 1); the first append adopts them.

ALTER TABLE audit_heads ADD COLUMN hash BLOB CHECK (hash IS NULL OR length(hash) = 32);

-- carevault schema, version 7 (SQLite): nothing to change. The PostgreSQL version moves each
-- segment's search keys from rows of audit_keys into an array on the segment under a GIN
-- index (PostgreSQL paid a heap tuple and a B-tree entry per key row); SQLite keeps its
-- audit_keys rows, a WITHOUT ROWID table that is its own index. The number is kept in both
-- folders so the lists stay aligned.
SELECT 1;

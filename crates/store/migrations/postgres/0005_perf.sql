-- carevault schema, version 5 (PostgreSQL): nothing to change. The SQLite version makes the
-- search tables WITHOUT ROWID (a SQLite storage detail with no PostgreSQL counterpart); the
-- number is kept in both folders so the lists stay aligned.
SELECT 1;

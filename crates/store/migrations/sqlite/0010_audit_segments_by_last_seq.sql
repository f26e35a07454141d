-- carevault schema, version 10: the audit trail's segments by their last sequence number.
--
-- A walk of the trail (`audit verify`, export) asks for the segments ending after the last
-- record it has seen. The primary key orders segments by their first sequence number, which
-- cannot bound "ends after", so each page scanned the tenant's segments from the beginning: a
-- verification of 10 million records spent most of its time there, and grew with the square
-- of the trail. With this index each page is one seek.
CREATE INDEX audit_segments_by_last_seq ON audit_segments (tenant_id, last_seq);

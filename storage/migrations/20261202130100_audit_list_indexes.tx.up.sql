-- PostgreSQL only (see postgres/20261202130100_audit_list_indexes.tx.up.sql):
-- the audit list is ordered by (occurred_at, id). On SQLite every index
-- of audit_log already ends in the rowid, which is id, so the indexes
-- serve that order as they are.
SELECT 1;

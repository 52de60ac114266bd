-- Every statement the export service runs. Loaded by services/export/store.py.

-- name: ping
-- Answers when the database does; used by /healthz.
SELECT 1

-- name: schema_version
-- The newest migration applied; /readyz compares it with the code's.
SELECT coalesce(max(version), 0) FROM schema_migrations

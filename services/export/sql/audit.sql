-- The export audit log. Loaded by services/export/audit.py.

-- name: begin_entry
INSERT INTO export_audit (id, account_id, credential_id, action, filters, request_id)
VALUES ($1, $2, $3, $4, $5::jsonb, $6);

-- name: finish_entry
UPDATE export_audit
   SET finished_at = now(), outcome = $2, rows = $3, bytes = $4
 WHERE id = $1;

-- name: page_entries
-- The account's entries, newest first, optionally of one action and in [$3, $4), after
-- the position ($5, $6) of the previous page's last entry.
SELECT * FROM export_audit
 WHERE account_id = $1
   AND ($2::text IS NULL OR action = $2)
   AND ($3::timestamptz IS NULL OR started_at >= $3)
   AND ($4::timestamptz IS NULL OR started_at < $4)
   AND ($5::timestamptz IS NULL OR (started_at, id) < ($5, $6::uuid))
 ORDER BY started_at DESC, id DESC
 LIMIT $7;

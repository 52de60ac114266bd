-- Every statement the export service runs. Loaded by services/export/store.py.

-- name: ping
-- Answers when the database does; used by /healthz.
SELECT 1

-- name: schema_version
-- The newest migration applied; /readyz compares it with the code's.
SELECT coalesce(max(version), 0) FROM schema_migrations

-- name: confirm_recipient
-- A recipient's click on its signed link: approves it only while it is pending (a revoked
-- one stays revoked), recording how and by whom. Answers the recipient as it is now.
WITH approved AS (
    UPDATE recipients SET state = 'approved', changed_at = now()
     WHERE id = $1 AND state = 'pending'
    RETURNING id, address
), recorded AS (
    INSERT INTO recipient_events (recipient_id, state, how, actor)
    SELECT id, 'approved', 'link', address FROM approved
)
SELECT r.address, coalesce((SELECT 'approved' FROM approved), r.state) AS state,
       (SELECT count(*) FROM approved) = 1 AS changed
  FROM recipients r
 WHERE r.id = $1

-- name: delivery_account
-- The account a delivery belongs to (a signed download's audit entry).
SELECT account_id FROM deliveries WHERE id = $1

-- Every statement about connections. Loaded by services/scheduler/connections/store.py.

-- name: account_state
SELECT status = 'archived' AS archived FROM accounts WHERE id = $1;

-- name: insert
INSERT INTO connections (id, account_id, name, kind, settings, secrets, audience_ids)
VALUES ($1, $2, $3, $6, $4, $5, $7)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: get
SELECT * FROM connections WHERE account_id = $1 AND id = $2;

-- name: page
SELECT * FROM connections
 WHERE account_id = $1 AND name > $2
 ORDER BY name
 LIMIT $3;

-- name: update
UPDATE connections
   SET name = $3, kind = $6, settings = $4, secrets = $5, audience_ids = $7,
       version = version + 1, updated_at = now()
 WHERE account_id = $1 AND id = $2
RETURNING *;

-- name: delete
DELETE FROM connections WHERE account_id = $1 AND id = $2;

-- name: owning_subscription
-- The active Zapier subscription that owns this connection (it is removed by
-- unsubscribing, never through the connection API), if any.
SELECT id FROM zapier_subscriptions WHERE connection_id = $1 AND state = 'active';

-- name: tasks_using
SELECT id, name FROM tasks WHERE connection_id = $1 ORDER BY name LIMIT 20;

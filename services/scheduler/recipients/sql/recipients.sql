-- Every statement about recipients. Loaded by services/scheduler/recipients/store.py.

-- name: email_connection
-- The account's connection, its kind and the names a confirmation mentions.
SELECT c.id, c.kind, c.name, a.name AS account_name
  FROM connections c
  JOIN accounts a ON a.id = c.account_id
 WHERE c.account_id = $1 AND c.id = $2;

-- name: find
SELECT * FROM recipients WHERE connection_id = $1 AND address = $2;

-- name: get
SELECT * FROM recipients WHERE connection_id = $1 AND id = $2;

-- name: insert
INSERT INTO recipients (id, connection_id, account_id, address)
VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: set_state
UPDATE recipients SET state = $2, changed_at = now() WHERE id = $1 RETURNING *;

-- name: record_event
INSERT INTO recipient_events (recipient_id, state, how, actor) VALUES ($1, $2, $3, $4);

-- name: list
SELECT * FROM recipients WHERE connection_id = $1 ORDER BY address LIMIT 1000;

-- name: history
SELECT recipient_id, state, how, actor, at FROM recipient_events
 WHERE recipient_id = ANY($1::uuid[])
 ORDER BY at, id;

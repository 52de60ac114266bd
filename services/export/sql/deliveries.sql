-- The delivery history of the export API. Loaded by services/export/delivery_store.py.

-- name: page_deliveries
-- The account's deliveries, newest first (reserved_at, then id), optionally of one task
-- ($2), one connection ($3, the task's), one state ($4), one purpose ($5), reserved in
-- [$6, $7), after the position ($8, $9) of the previous page's last delivery.
SELECT d.*, t.connection_id
  FROM deliveries d
  JOIN tasks t ON t.id = d.task_id
 WHERE d.account_id = $1
   AND ($2::uuid IS NULL OR d.task_id = $2)
   AND ($3::uuid IS NULL OR t.connection_id = $3)
   AND ($4::text IS NULL OR d.state = $4)
   AND ($5::text IS NULL OR d.purpose = $5)
   AND ($6::timestamptz IS NULL OR d.reserved_at >= $6)
   AND ($7::timestamptz IS NULL OR d.reserved_at < $7)
   AND ($8::timestamptz IS NULL OR (d.reserved_at, d.id) < ($8, $9::uuid))
 ORDER BY d.reserved_at DESC, d.id DESC
 LIMIT $10;

-- name: get_delivery
-- One delivery of the account, with its task's connection.
SELECT d.*, t.connection_id
  FROM deliveries d
  JOIN tasks t ON t.id = d.task_id
 WHERE d.account_id = $1 AND d.id = $2;

-- name: delivery_attempts
-- A delivery's finished attempts, in order.
SELECT attempt, started_at, finished_at, outcome, error, diagnosis
  FROM delivery_attempts
 WHERE delivery_id = $1
 ORDER BY attempt;

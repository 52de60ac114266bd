-- Email delivery: a delivery's approved recipients and their outcomes. Loaded by
-- services/delivery/email_store.py.

-- name: recipients
-- The approved recipients of the delivery's connection, now; done: an outcome is recorded
-- for this delivery (accepted, or failed for good), so it is not sent again.
SELECT r.id, r.address, o.outcome IS NOT NULL AS done
  FROM deliveries d
  JOIN tasks t ON t.id = d.task_id
  JOIN recipients r ON r.connection_id = t.connection_id AND r.state = 'approved'
  LEFT JOIN delivery_recipients o ON o.delivery_id = d.id AND o.recipient_id = r.id
 WHERE d.id = $1
 ORDER BY r.address;

-- name: record
INSERT INTO delivery_recipients (delivery_id, recipient_id, address, outcome, message_id, detail)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (delivery_id, recipient_id) DO NOTHING;

-- name: attention
-- A recipient refused the delivery for good: the account is told, the delivery goes on.
INSERT INTO attention_events (id, account_id, task_id, delivery_id, diagnosis, message)
SELECT $2, d.account_id, d.task_id, d.id, 'recipient', $3
  FROM deliveries d
 WHERE d.id = $1;

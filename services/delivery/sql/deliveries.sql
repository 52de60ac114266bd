-- Every statement the delivery service runs. Loaded by services/delivery/store.py.

-- name: claim
-- Take the lease of a delivery that is waiting, or whose previous attempt's lease ran out
-- (its process died). One attempt at a time, whatever the number of replicas.
UPDATE deliveries
   SET state = 'running', attempts = attempts + 1, lease_until = now() + make_interval(secs => $2)
 WHERE id = $1
   AND (state IN ('issued', 'retrying') OR (state = 'running' AND lease_until < now()))
RETURNING *, now() AS claimed_at;

-- name: state
SELECT state, lease_until, next_attempt_at, after_seq, through_seq FROM deliveries WHERE id = $1;

-- name: heartbeat
UPDATE deliveries SET lease_until = now() + make_interval(secs => $3)
 WHERE id = $1 AND attempts = $2 AND state = 'running';

-- name: context
-- What running a delivery needs: its task, connection and account.
SELECT t.name AS task_name, t.campaign_ids, t.layout_id, t.format, t.time_zone,
       t.delivered_seq, t.audience_ids, c.id AS connection_id, c.settings, c.secrets,
       a.time_zone AS account_time_zone,
       (SELECT coalesce(jsonb_object_agg(id::text, name), '{}') FROM campaigns
         WHERE account_id = t.account_id) AS campaign_names,
       c.kind
  FROM tasks t
  JOIN connections c ON c.id = t.connection_id
  JOIN accounts a ON a.id = t.account_id
 WHERE t.id = $1;

-- name: layout_definitions
-- The layout a task names ($2), or the account's saved default when $2 is NULL, and every
-- custom field of the account, as stored.
SELECT (SELECT jsonb_build_object('id', id, 'version', version, 'definition', definition)
          FROM layouts
         WHERE account_id = $1 AND (id = $2 OR ($2 IS NULL AND is_default))) AS layout,
       (SELECT coalesce(jsonb_object_agg(name, jsonb_build_object(
                   'id', id, 'version', version, 'description', description,
                   'definition', definition)), '{}')
          FROM custom_fields WHERE account_id = $1) AS custom_fields;

-- name: keep_layout
-- The first attempt fixes what every later one renders.
UPDATE deliveries SET layout = $2 WHERE id = $1 AND layout IS NULL RETURNING layout;

-- name: kept_layout
SELECT layout FROM deliveries WHERE id = $1;

-- name: suppressions_recorded
-- Whether the delivery recorded what its audiences held back (delivery_held_back).
SELECT suppressed IS NOT NULL AS recorded FROM deliveries WHERE id = $1;

-- name: record_suppressions
-- The seqs $2 a delivery's audiences held back, recorded by the first attempt to render
-- it; none when another attempt recorded first.
WITH claimed AS (
    UPDATE deliveries SET suppressed = cardinality($2::bigint[])
     WHERE id = $1 AND suppressed IS NULL
    RETURNING id
)
INSERT INTO delivery_held_back (delivery_id, seqs)
SELECT id, $2 FROM claimed
RETURNING delivery_id;

-- name: succeed
UPDATE deliveries
   SET state = 'succeeded', rows_sent = $3, bytes_sent = $4, files = $5, error = NULL,
       diagnosis = NULL, finished_at = now(), lease_until = NULL
 WHERE id = $1 AND attempts = $2 AND state = 'running'
RETURNING task_id, purpose, after_seq, through_seq;

-- name: advance_cursor
-- Only from the range's start: a cursor never skips, nor moves twice.
UPDATE tasks SET delivered_seq = $3 WHERE id = $1 AND delivered_seq = $2;

-- name: retry_later
UPDATE deliveries
   SET state = 'retrying', next_attempt_at = $3, error = $4, diagnosis = $5, lease_until = NULL
 WHERE id = $1 AND attempts = $2 AND state = 'running';

-- name: give_up
UPDATE deliveries
   SET state = 'dead', error = $3, diagnosis = $4, finished_at = now(), lease_until = NULL
 WHERE id = $1 AND attempts = $2 AND state = 'running'
RETURNING task_id, account_id, purpose;

-- name: needs_attention
UPDATE tasks SET attention = $2, attention_at = now() WHERE id = $1;

-- name: attention_event
INSERT INTO attention_events (id, account_id, task_id, delivery_id, diagnosis, message)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: record_attempt
INSERT INTO delivery_attempts (delivery_id, attempt, started_at, outcome, error, diagnosis)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (delivery_id, attempt) DO NOTHING;

-- name: original_files
-- What the delivery a resend repeats wrote: [{"path", "rows", "bytes", "sha256"}].
SELECT coalesce(files, '[]') AS files FROM deliveries WHERE id = $1;

-- name: described
-- A delivery as an attempt sees it, without taking its lease (a signed download renders
-- its file again).
SELECT *, now() AS claimed_at FROM deliveries WHERE id = $1;

-- name: items_reset
-- A record delivery's attempt decides every referral's outcome again.
DELETE FROM delivery_items WHERE delivery_id = $1;

-- name: items_record
-- Referrals of a record delivery that were rejected, or are left to the next attempt.
INSERT INTO delivery_items (delivery_id, attempt, seq, outcome, detail)
SELECT $1, $2, i.seq, i.outcome, i.detail
  FROM unnest($3::bigint[], $4::text[], $5::text[]) AS i(seq, outcome, detail)
ON CONFLICT (delivery_id, seq) DO UPDATE
   SET outcome = EXCLUDED.outcome, attempt = EXCLUDED.attempt, detail = EXCLUDED.detail,
       at = now();

-- name: items_of
-- A record delivery's referrals that were not simply accepted, in seq order.
SELECT seq, outcome, detail FROM delivery_items WHERE delivery_id = $1 ORDER BY seq;

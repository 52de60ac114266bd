-- Every statement about tasks and their deliveries that the scheduler runs.
-- Loaded by services/scheduler/tasks/store.py.

-- name: safe_watermark
-- Must be the transaction's first statement (the function refuses once it wrote).
SELECT safe_referral_watermark();

-- name: account_state
SELECT status = 'archived' AS archived, time_zone FROM accounts WHERE id = $1;

-- name: foreign_campaigns
-- The ids in $2 that are not campaigns of account $1.
SELECT c FROM unnest($2::uuid[]) AS c
 WHERE NOT EXISTS (SELECT 1 FROM campaigns WHERE id = c AND account_id = $1);

-- name: layout_exists
SELECT EXISTS (SELECT 1 FROM layouts WHERE account_id = $1 AND id = $2);

-- name: connection_exists
SELECT EXISTS (SELECT 1 FROM connections WHERE account_id = $1 AND id = $2);

-- name: backfill_cursor
-- The cursor that makes a new task send everything received since $2: just below the
-- first such referral (referrals received earlier but with a higher seq come along).
SELECT coalesce(min(seq) - 1, $3) FROM referrals WHERE account_id = $1 AND received_at >= $2;

-- name: insert_task
INSERT INTO tasks (id, account_id, connection_id, name, campaign_ids, layout_id, format,
                   schedule, time_zone, enabled, send_empty, audience_ids, delivered_seq,
                   next_run_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: get_task
SELECT * FROM tasks WHERE account_id = $1 AND id = $2;

-- name: page_tasks
SELECT * FROM tasks WHERE account_id = $1 AND name > $2 ORDER BY name LIMIT $3;

-- name: update_task
-- Settings only: the cursor stays. Clearing attention sends a dead delivery again first.
UPDATE tasks
   SET connection_id = $3, name = $4, campaign_ids = $5, layout_id = $6, format = $7,
       schedule = $8, time_zone = $9, enabled = $10, send_empty = $11, audience_ids = $12,
       next_run_at = $13,
       attention = NULL, attention_at = NULL, version = version + 1, updated_at = now()
 WHERE account_id = $1 AND id = $2
RETURNING *;

-- name: delete_task
DELETE FROM tasks WHERE account_id = $1 AND id = $2;

-- name: set_enabled
UPDATE tasks
   SET enabled = $3, updated_at = now(),
       attention = CASE WHEN $3 THEN NULL ELSE attention END,
       attention_at = CASE WHEN $3 THEN NULL ELSE attention_at END
 WHERE account_id = $1 AND id = $2
RETURNING *;

-- name: run_now
UPDATE tasks SET next_run_at = now(), updated_at = now()
 WHERE account_id = $1 AND id = $2
RETURNING *;

-- name: revive_dead
-- After a fix: the task's dead scheduled delivery is tried again (same range and names).
UPDATE deliveries
   SET state = 'retrying', next_attempt_at = now(), error = NULL, diagnosis = NULL,
       finished_at = NULL, attempts = 0, reserved_at = reserved_at
 WHERE task_id = $1 AND purpose = 'scheduled' AND state = 'dead'
   AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.task_id = $1 AND o.purpose = 'scheduled'
                     AND o.state IN ('issued', 'running', 'retrying'))
   AND id = (SELECT id FROM deliveries WHERE task_id = $1 AND purpose = 'scheduled'
              AND state = 'dead' ORDER BY reserved_at DESC LIMIT 1);

-- name: resolve_attention
UPDATE attention_events SET resolved_at = now() WHERE task_id = $1 AND resolved_at IS NULL;

-- name: open_delivery
SELECT EXISTS (SELECT 1 FROM deliveries WHERE task_id = $1 AND purpose = 'scheduled'
                 AND state IN ('issued', 'running', 'retrying'));

-- name: due_tasks
-- Tasks due at $1, locked so that no other scheduler replica reserves them too.
SELECT t.*,
       EXISTS (SELECT 1 FROM deliveries d WHERE d.task_id = t.id AND d.purpose = 'scheduled'
                 AND d.state IN ('issued', 'running', 'retrying')) AS has_open
  FROM tasks t
 WHERE t.enabled AND t.attention IS NULL AND t.next_run_at <= $1
 ORDER BY t.next_run_at
 LIMIT $2
   FOR UPDATE OF t SKIP LOCKED;

-- name: insert_delivery
-- A resend ($9: the original) renders the original's rows: it shows its suppressed count.
INSERT INTO deliveries (id, task_id, account_id, purpose, after_seq, through_seq, layout,
                        reserved_at, resend_of, next_attempt_at, suppressed)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, least($8, now()),
        (SELECT o.suppressed FROM deliveries o WHERE o.id = $9))
RETURNING *;

-- name: insert_redelivery
-- A time frame sent again, over everything up to the watermark now ($5); the cursor stays.
INSERT INTO deliveries (id, task_id, account_id, purpose, after_seq, through_seq,
                        frame_field, frame_from, frame_to)
VALUES ($1, $2, $3, 'redeliver', 0, $4, $5, $6, $7)
RETURNING *;

-- name: set_next_run
UPDATE tasks SET next_run_at = $2 WHERE id = $1;

-- name: jobs_to_issue
-- Deliveries to hand to the delivery service now: due for an attempt, or running with an
-- expired lease (their process died). Each is pushed back so that it is asked again only
-- if this round does not start it.
UPDATE deliveries d
   SET next_attempt_at = $2
  FROM (SELECT id FROM deliveries
         WHERE (state IN ('issued', 'retrying') AND next_attempt_at <= $1)
            OR (state = 'running' AND lease_until < $1 AND next_attempt_at <= $1)
         ORDER BY next_attempt_at
         LIMIT $3
           FOR UPDATE SKIP LOCKED) due
 WHERE d.id = due.id
RETURNING d.id, d.after_seq, d.through_seq;

-- name: page_deliveries
SELECT * FROM deliveries
 WHERE account_id = $1 AND task_id = $2
   AND ($3::timestamptz IS NULL OR (reserved_at, id) < ($3, $4::uuid))
 ORDER BY reserved_at DESC, id DESC
 LIMIT $5;

-- name: get_delivery
SELECT * FROM deliveries WHERE account_id = $1 AND id = $2;

-- name: attention_events
SELECT * FROM attention_events
 WHERE account_id = $1 AND ($2 OR resolved_at IS NULL)
 ORDER BY created_at DESC
 LIMIT 200;

-- name: has_news
-- Whether the task's scope has a referral in ($2, $3] (other accounts' seqs do not count).
SELECT EXISTS (
    SELECT 1 FROM referrals
     WHERE account_id = $1 AND seq > $2 AND seq <= $3
       AND ($4::uuid[] IS NULL OR campaign_id = ANY ($4))
) AS news;

-- name: skip_empty
-- Nothing of the task's scope in (cursor, $2]: as if an empty delivery succeeded.
UPDATE tasks SET delivered_seq = greatest(delivered_seq, $2) WHERE id = $1;

-- name: count_in_range
SELECT count(*) FROM referrals
 WHERE account_id = $1 AND seq > $2 AND seq <= $3
   AND ($4::uuid[] IS NULL OR campaign_id = ANY ($4));

-- name: delivery_lags
-- Per enabled task: how long its oldest referral not yet delivered has waited (seconds;
-- 0 when it is up to date). Read by the delivery-lag metric.
SELECT t.id, t.account_id,
       coalesce(extract(epoch FROM now() - oldest.received_at), 0)::float8 AS lag_s
  FROM tasks t
  LEFT JOIN LATERAL (
        SELECT r.received_at FROM referrals r
         WHERE r.account_id = t.account_id AND r.seq > t.delivered_seq
           AND (t.campaign_ids IS NULL OR r.campaign_id = ANY (t.campaign_ids))
         ORDER BY r.seq
         LIMIT 1) oldest ON true
 WHERE t.enabled;

-- name: task_encrypts
-- Whether the task's connection encrypts its files (OpenPGP).
SELECT coalesce(c.settings->>'pgp_public_key', '') <> ''
  FROM tasks t JOIN connections c ON c.id = t.connection_id
 WHERE t.id = $1;

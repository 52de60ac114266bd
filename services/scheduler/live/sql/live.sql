-- The live-delivery API: state, waiting referrals, attempts, replay, enable and disable.
-- Loaded by services/scheduler/live/store.py. Every query is filtered by account.

-- name: live_state
SELECT k.kind, c.delivered_seq, c.disabled_at, c.disabled_reason, c.failing_since,
       c.last_success_at, coalesce(c.suppressed, 0) AS suppressed, CASE WHEN c.lease_until > now() THEN c.owner END AS owner,
       (SELECT count(*) FROM live_messages m WHERE m.connection_id = k.id
           AND m.state IN ('retrying', 'replay')) AS waiting,
       (SELECT count(*) FROM live_messages m WHERE m.connection_id = k.id
           AND m.state = 'dead') AS dead,
       (SELECT count(*) FROM live_messages m WHERE m.connection_id = k.id
           AND m.state = 'rejected') AS rejected
  FROM connections k
  LEFT JOIN live_cursors c ON c.connection_id = k.id
 WHERE k.account_id = $1 AND k.id = $2;

-- name: live_settings
SELECT settings FROM connections WHERE account_id = $1 AND id = $2;

-- name: live_messages_page
-- Newest attempt first; $4 is the position after which the page starts (last_attempt_at
-- and seq of the previous page's last row), $3 the state ('' for all).
SELECT seq, state, attempts, next_attempt_at, first_failed_at, last_attempt_at,
       last_status, last_error
  FROM live_messages
 WHERE connection_id = $1 AND account_id = $2 AND ($3 = '' OR state = $3)
   AND ($4::timestamptz IS NULL OR (last_attempt_at, seq) < ($4, $5))
 ORDER BY last_attempt_at DESC, seq DESC
 LIMIT $6;

-- name: live_attempts_page
SELECT attempted_at, seq, attempt, status, latency_ms, outcome, rule, response_head, error
  FROM live_attempts
 WHERE connection_id = $1 AND account_id = $2 AND ($3::bigint = 0 OR seq = $3)
   AND ($4::timestamptz IS NULL OR (attempted_at, seq) < ($4, $5))
 ORDER BY attempted_at DESC, seq DESC
 LIMIT $6;

-- name: live_replay_seqs
-- Queue these referrals (of the account, at or below the cursor) for sending again.
INSERT INTO live_messages (connection_id, seq, account_id, state, attempts, next_attempt_at)
SELECT $1, r.seq, $2, 'replay', 0, now()
  FROM referrals r
 WHERE r.account_id = $2 AND r.seq = ANY ($3::bigint[])
   AND r.seq <= (SELECT delivered_seq FROM live_cursors WHERE connection_id = $1)
ON CONFLICT (connection_id, seq) DO UPDATE
   SET state = 'replay', attempts = 0, next_attempt_at = now();

-- name: live_replay_received
-- Queue every referral of the account received in [$3, $4), of the campaigns $5 (NULL:
-- all), at or below the cursor.
INSERT INTO live_messages (connection_id, seq, account_id, state, attempts, next_attempt_at)
SELECT $1, r.seq, $2, 'replay', 0, now()
  FROM referrals r
 WHERE r.account_id = $2 AND r.received_at >= $3 AND r.received_at < $4
   AND ($5::uuid[] IS NULL OR r.campaign_id = ANY ($5))
   AND r.seq <= (SELECT delivered_seq FROM live_cursors WHERE connection_id = $1)
ON CONFLICT (connection_id, seq) DO UPDATE
   SET state = 'replay', attempts = 0, next_attempt_at = now();

-- name: live_replay_failed
-- Queue every dead or rejected referral whose last attempt was at or after $3.
UPDATE live_messages
   SET state = 'replay', attempts = 0, next_attempt_at = now()
 WHERE connection_id = $1 AND account_id = $2 AND state IN ('dead', 'rejected')
   AND last_attempt_at >= $3;

-- name: live_enable
-- Resume: the cursor stays, waiting referrals are due at once, the endpoint's failure
-- clock restarts, and the attention events about it are resolved.
WITH enabled AS (
    UPDATE live_cursors
       SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL, updated_at = now()
     WHERE connection_id = $1 AND account_id = $2
    RETURNING connection_id
), due AS (
    UPDATE live_messages SET next_attempt_at = now()
     WHERE connection_id IN (SELECT connection_id FROM enabled)
       AND state IN ('retrying', 'replay')
)
UPDATE attention_events SET resolved_at = now()
 WHERE connection_id IN (SELECT connection_id FROM enabled) AND resolved_at IS NULL;

-- name: live_disable_by_person
UPDATE live_cursors
   SET disabled_at = now(), disabled_reason = $3, owner = NULL, lease_until = NULL,
       updated_at = now()
 WHERE connection_id = $1 AND account_id = $2;

-- name: live_wakeup
-- Tell the delivery replicas (the one running the connection, or any that may take it).
SELECT pg_notify('live_wakeup', $1::text);

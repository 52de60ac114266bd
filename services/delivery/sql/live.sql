-- Real-time delivery (API and vendor connections): leases on connections' live loops, cursors, waiting referrals,
-- attempts. Loaded by services/delivery/live/store.py.

-- name: live_claim
-- Take (or keep) the live loops this replica may run: connections of the kinds it has a
-- record sender for ($4) that run in real time (API connections have no mode), whose
-- lease is free, expired or already ours, up to $3 new ones; renews ours. Returns what we
-- own now.
WITH wanted AS (
    SELECT c.connection_id
      FROM live_cursors c JOIN connections k ON k.id = c.connection_id
     WHERE k.kind = ANY ($4::text[]) AND coalesce(k.settings->>'mode', 'realtime') = 'realtime'
       AND c.disabled_at IS NULL
       AND (c.owner = $1 OR c.lease_until IS NULL OR c.lease_until < now())
     ORDER BY (c.owner = $1) DESC NULLS LAST, c.connection_id
     LIMIT $3
       FOR UPDATE OF c SKIP LOCKED
)
UPDATE live_cursors c
   SET owner = $1, lease_until = now() + make_interval(secs => $2)
  FROM wanted JOIN connections k ON k.id = wanted.connection_id
 WHERE c.connection_id = wanted.connection_id
RETURNING c.connection_id, k.version;

-- name: live_release
-- Give up every lease of this replica (a clean shutdown: another takes over at once).
UPDATE live_cursors SET owner = NULL, lease_until = NULL WHERE owner = $1;

-- name: live_connection
-- What a live loop runs from: the connection and its cursor.
SELECT k.account_id, k.kind, k.name, k.settings, k.secrets, k.version, k.audience_ids,
       c.delivered_seq, c.starts_at, c.disabled_at, c.disabled_reason, c.failing_since
  FROM connections k
  JOIN live_cursors c ON c.connection_id = k.id
 WHERE k.id = $1;

-- name: live_place_cursor
-- A new connection's cursor: just below the first referral received since it was made
-- ($3: the safe watermark, which it never passes).
UPDATE live_cursors c
   SET delivered_seq = least($3::bigint, coalesce(
           (SELECT min(r.seq) - 1 FROM referrals r
             WHERE r.account_id = c.account_id AND r.received_at >= c.starts_at), $3::bigint))
 WHERE c.connection_id = $1 AND c.delivered_seq IS NULL AND c.owner = $2
RETURNING c.delivered_seq;

-- name: live_watermark
SELECT safe_referral_watermark() AS watermark;

-- name: live_rows
-- The account's next referrals after $2 up to $3 (the watermark), of the campaigns $4
-- (NULL: all), received at or after $6 (the connection's start), in seq order, at most
-- $5: every column as text, in ROW_FIELDS order.
SELECT r.seq::text AS seq, r.account_id::text AS account_id,
       r.campaign_id::text AS campaign_id, r.partner_referral_id,
       r.received_at::text AS received_at, r.email, r.title, r.first_name, r.last_name,
       r.gender, coalesce(r.date_of_birth::text, '') AS date_of_birth, r.mobile, r.phone,
       r.address_line1, r.address_line2, r.city, r.state, r.postcode, r.country, r.language,
       r.partner_id, r.publisher_id, r.creative_id, r.ad_text, r.audience,
       r.opted_in_at::text AS opted_in_at, coalesce(host(r.ip_address), '') AS ip_address,
       r.user_agent, r.browser, r.extra::text AS extra
  FROM referrals r
 WHERE r.account_id = $1 AND r.seq > $2 AND r.seq <= $3
   AND ($4::uuid[] IS NULL OR r.campaign_id = ANY ($4))
   AND r.received_at >= $6
 ORDER BY r.seq
 LIMIT $5;

-- name: live_rows_by_seq
-- The account's referrals with these seqs (retries and replays), in seq order.
SELECT r.seq::text AS seq, r.account_id::text AS account_id,
       r.campaign_id::text AS campaign_id, r.partner_referral_id,
       r.received_at::text AS received_at, r.email, r.title, r.first_name, r.last_name,
       r.gender, coalesce(r.date_of_birth::text, '') AS date_of_birth, r.mobile, r.phone,
       r.address_line1, r.address_line2, r.city, r.state, r.postcode, r.country, r.language,
       r.partner_id, r.publisher_id, r.creative_id, r.ad_text, r.audience,
       r.opted_in_at::text AS opted_in_at, coalesce(host(r.ip_address), '') AS ip_address,
       r.user_agent, r.browser, r.extra::text AS extra
  FROM referrals r
 WHERE r.account_id = $1 AND r.seq = ANY ($2::bigint[])
 ORDER BY r.seq;

-- name: live_due
-- Waiting referrals due by $2, oldest due first, at most $3.
SELECT seq, attempts, first_failed_at
  FROM live_messages
 WHERE connection_id = $1 AND state IN ('retrying', 'replay') AND next_attempt_at <= $2
 ORDER BY next_attempt_at, seq
 LIMIT $3;

-- name: live_next_due
-- When the next waiting referral is due after $2 (those due already are being sent), and
-- how many wait.
SELECT min(next_attempt_at) FILTER (WHERE next_attempt_at > $2) AS next_at,
       count(*) AS waiting
  FROM live_messages
 WHERE connection_id = $1 AND state IN ('retrying', 'replay');

-- name: live_accounts_between
-- The accounts with referrals in ($1, $2]: whose live loops a new watermark wakes.
SELECT DISTINCT account_id FROM referrals WHERE seq > $1 AND seq <= $2;

-- name: live_advance
-- Move the cursor (never back) and the endpoint's health, if this replica still owns the
-- loop: no row means the lease was lost and the whole flush is rolled back. $6: referrals
-- the connection's audiences held back since the last flush.
UPDATE live_cursors
   SET delivered_seq = greatest(delivered_seq, $3),
       suppressed = suppressed + $6,
       last_success_at = CASE WHEN $4::timestamptz IS NULL THEN last_success_at
                              ELSE greatest(last_success_at, $4) END,
       failing_since = CASE WHEN $4::timestamptz IS NOT NULL AND
                                 ($5::timestamptz IS NULL OR $4 >= $5) THEN NULL
                            WHEN $5::timestamptz IS NOT NULL THEN coalesce(failing_since, $5)
                            ELSE failing_since END,
       updated_at = now()
 WHERE connection_id = $1 AND owner = $2 AND lease_until > now()
RETURNING failing_since;

-- name: live_park
-- Record waiting, dead and rejected referrals (one row each, replacing the previous).
INSERT INTO live_messages (connection_id, seq, account_id, state, attempts, next_attempt_at,
                           first_failed_at, last_attempt_at, last_status, last_error)
SELECT $1, m.seq, $2, m.state, m.attempts, m.next_at, m.first_failed, m.last_at, m.status,
       m.error
  FROM unnest($3::bigint[], $4::text[], $5::int[], $6::timestamptz[], $7::timestamptz[],
              $8::timestamptz[], $9::int[], $10::text[])
       AS m(seq, state, attempts, next_at, first_failed, last_at, status, error)
ON CONFLICT (connection_id, seq) DO UPDATE
   SET state = EXCLUDED.state, attempts = EXCLUDED.attempts,
       next_attempt_at = EXCLUDED.next_attempt_at,
       first_failed_at = coalesce(live_messages.first_failed_at, EXCLUDED.first_failed_at),
       last_attempt_at = EXCLUDED.last_attempt_at, last_status = EXCLUDED.last_status,
       last_error = EXCLUDED.last_error;

-- name: live_done
-- Referrals that waited and are now accepted.
DELETE FROM live_messages WHERE connection_id = $1 AND seq = ANY ($2::bigint[]);

-- name: live_disable
-- Disable the endpoint (once), with the reason; the caller records the attention event.
UPDATE live_cursors
   SET disabled_at = $2, disabled_reason = $3, owner = NULL, lease_until = NULL,
       updated_at = now()
 WHERE connection_id = $1 AND disabled_at IS NULL
RETURNING account_id;

-- name: live_endpoint_gone
-- A 410 from a connection that a Zapier subscription owns: the Zap was turned off, so the
-- subscription is removed (recorded, with the reason) and its connection deleted. No row
-- for any other connection.
SELECT zapier_remove_subscription(s.id, $2, $3) AS removed
  FROM zapier_subscriptions s
 WHERE s.connection_id = $1 AND s.state = 'active';

-- name: live_attention
INSERT INTO attention_events (id, account_id, connection_id, diagnosis, message)
VALUES ($1, $2, $3, $4, $5);

-- name: live_hold_for
-- Push every waiting referral's next attempt to at least $2 (a 429's Retry-After).
UPDATE live_messages SET next_attempt_at = greatest(next_attempt_at, $2)
 WHERE connection_id = $1 AND state IN ('retrying', 'replay');

-- name: live_layout
-- The layout a vendor connection maps ($2), or the account's saved default when $2 is NULL
-- (no row: the built-in default, or a layout that is gone).
SELECT id, definition FROM layouts
 WHERE account_id = $1 AND (id = $2 OR ($2::uuid IS NULL AND is_default));

-- name: live_custom_fields
-- The account's custom fields, as stored (bodies may name them).
SELECT name, description, definition FROM custom_fields WHERE account_id = $1;

-- name: live_maintain
-- One replica at a time keeps the attempt log's partitions (see the migration).
SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext('live_attempts_maintain'))
            THEN live_attempts_maintain($1, $2) END AS dropped;

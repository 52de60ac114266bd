-- Zapier: REST-hook subscriptions and the polling endpoint's reads.
-- Loaded by services/export/zapier_store.py.

-- name: insert_subscription
INSERT INTO zapier_subscriptions (id, account_id, connection_id, target_url, event,
                                  campaign_ids, credential_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *;

-- name: remove_subscription
-- Remove the account's active subscription (the rule is the migration's function).
SELECT zapier_remove_subscription(s.id, now(), $3) AS removed
  FROM zapier_subscriptions s
 WHERE s.account_id = $1 AND s.id = $2 AND s.state = 'active';

-- name: get_subscription
SELECT * FROM zapier_subscriptions WHERE account_id = $1 AND id = $2;

-- name: page_subscriptions
-- The account's subscriptions, newest first, after the position ($2, $3).
SELECT * FROM zapier_subscriptions
 WHERE account_id = $1
   AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT $4;

-- name: latest_seqs
-- The account's $2 newest referrals (by seq: the (account_id, seq) index, backwards).
SELECT seq FROM referrals WHERE account_id = $1 ORDER BY seq DESC LIMIT $2;

-- name: latest_seqs_in_campaigns
-- The $3 newest referrals of the account's campaigns $2: each campaign's newest through
-- its (campaign_id, seq) index, then merged, so a rare campaign costs no scan.
SELECT s.seq
  FROM unnest($2::uuid[]) AS c(id)
 CROSS JOIN LATERAL (
       SELECT r.seq FROM referrals r
        WHERE r.campaign_id = c.id AND r.account_id = $1
        ORDER BY r.seq DESC
        LIMIT $3) AS s
 ORDER BY s.seq DESC
 LIMIT $3;

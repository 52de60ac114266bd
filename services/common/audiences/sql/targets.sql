-- Audiences a task or a live connection names (services/common/audiences/targets.py).

-- name: audience_targets
-- The account's audiences among $2, as targeting needs them.
SELECT id, name, kind, state, member_count, md5_only
  FROM audiences
 WHERE account_id = $1 AND id = ANY ($2::uuid[]);

-- (Which referrals the audiences hold back is one SQL rule, built around its candidates
-- by targets.held_back(): a delivery's range, a live loop's page.)

-- Audiences a task or a live connection names (services/common/audiences/targets.py).

-- name: audience_targets
-- The account's audiences among $2, as targeting needs them.
SELECT id, name, kind, state, member_count
  FROM audiences
 WHERE account_id = $1 AND id = ANY ($2::uuid[]);

-- name: suppressed_seqs
-- Which of these referrals ($2) the audiences hold back ($3 exclude, $4 include).
SELECT r.seq
  FROM referrals r
 WHERE r.account_id = $1 AND r.seq = ANY ($2::bigint[])
   AND referral_suppressed(r.email, $3::uuid[], $4::uuid[]);

-- Every statement about credentials. Loaded by services/common/auth/store.py.

-- name: lookup
-- What verifying a token needs, with the state of the token's account.
SELECT c.*, a.status = 'archived' AS account_archived
  FROM credentials c
  LEFT JOIN accounts a ON a.id = c.account_id
 WHERE c.id = $1;

-- name: insert
INSERT INTO credentials
       (id, kind, name, secret_sha256, account_id, scopes, roles, ingest_account_ids,
        expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING *, false AS account_archived;

-- name: list
-- $1: an account or NULL for every credential; $4/$5: the position after which to start.
SELECT c.*, a.status = 'archived' AS account_archived
  FROM credentials c
  LEFT JOIN accounts a ON a.id = c.account_id
 WHERE ($1::uuid IS NULL OR c.account_id = $1)
   AND ($2 OR c.revoked_at IS NULL)
   AND ($4::timestamptz IS NULL OR (c.created_at, c.id) > ($4, $5::uuid))
 ORDER BY c.created_at, c.id
 LIMIT $3;

-- name: revoke
UPDATE credentials SET revoked_at = coalesce(revoked_at, now())
 WHERE id = $1
RETURNING *, false AS account_archived;

-- name: account_exists
SELECT status = 'archived' AS archived FROM accounts WHERE id = $1;

-- Custom audiences. Loaded by services/common/audiences/store.py.

-- name: create_audience
-- An include audience starts too small (it has nobody yet); an exclude one is ready.
INSERT INTO audiences (id, account_id, name, kind, state, source)
VALUES ($1, $2, $3, $4, CASE WHEN $4 = 'include' THEN 'too_small' ELSE 'ready' END, $5)
ON CONFLICT (account_id, name) DO NOTHING
RETURNING id, account_id, name, kind, source, member_count, sha256_count, md5_count, state,
       last_import_at, created_at, updated_at, md5_only;

-- name: get_audience
-- (Every column but the Bloom filter, 2 MiB, which only targeting reads.)
SELECT id, account_id, name, kind, source, member_count, sha256_count, md5_count, state,
       last_import_at, created_at, updated_at, md5_only
  FROM audiences WHERE account_id = $1 AND id = $2;

-- name: page_audiences
-- The account's audiences, newest first, after the position ($2, $3) of the previous
-- page's last one.
SELECT id, account_id, name, kind, source, member_count, sha256_count, md5_count, state,
       last_import_at, created_at, updated_at, md5_only
  FROM audiences
 WHERE account_id = $1
   AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT $4;

-- name: delete_audience
-- Deletes the audience unless a task or a connection names it (then nothing is deleted):
-- whether it was, whether it exists (as before the statement) and who names it.
WITH users AS (
    SELECT 'task ' || quote_literal(name) AS who
      FROM tasks WHERE account_id = $1 AND $2 = ANY (audience_ids)
    UNION ALL
    SELECT 'connection ' || quote_literal(name)
      FROM connections WHERE account_id = $1 AND $2 = ANY (audience_ids)
), gone AS (
    DELETE FROM audiences
     WHERE account_id = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM users)
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM gone) AS deleted,
       EXISTS (SELECT 1 FROM audiences WHERE account_id = $1 AND id = $2) AS found,
       ARRAY (SELECT who FROM users ORDER BY who LIMIT 20) AS users;

-- name: create_audience_staging
-- Per connection: an upload's members are COPied here, then merged in one transaction.
-- Kept across commits, emptied before and after each upload.
CREATE TEMP TABLE IF NOT EXISTS audience_staging (line integer, sha256 bytea, md5 bytea);

-- name: empty_audience_staging
TRUNCATE audience_staging;

-- name: count_staged_members
-- Valid lines and distinct people (a line repeats another when its SHA-256, or its MD5
-- for an MD5-only line, does).
SELECT count(*) AS valid, count(DISTINCT coalesce(sha256, md5)) AS people,
       count(*) FILTER (WHERE sha256 IS NULL) > 0 AS md5_only
  FROM audience_staging;

-- name: lock_audience
-- Serialises imports of one audience (and finds it: another account's is not found).
SELECT id FROM audiences WHERE account_id = $1 AND id = $2 FOR UPDATE;

-- name: remove_absent_sha256
-- Replace mode: members of a kind the file does not hold are removed.
DELETE FROM audience_members m
 WHERE m.audience_id = $1 AND m.hash_kind = 'sha256'
   AND NOT EXISTS (SELECT 1 FROM audience_staging s WHERE s.sha256 = m.hash);

-- name: remove_absent_md5
DELETE FROM audience_members m
 WHERE m.audience_id = $1 AND m.hash_kind = 'md5'
   AND NOT EXISTS (SELECT 1 FROM audience_staging s WHERE s.md5 = m.hash);

-- name: insert_staged_members
-- New members only, in index order (measured on 1M plain emails: 11 s against 18 s for
-- an unsorted INSERT ... ON CONFLICT DO NOTHING). lock_audience keeps other imports of
-- the audience out until commit, so NOT EXISTS cannot race another insert.
INSERT INTO audience_members (audience_id, hash_kind, hash)
SELECT DISTINCT $1::uuid, s.kind, s.hash
  FROM (SELECT 'sha256' AS kind, sha256 AS hash FROM audience_staging WHERE sha256 IS NOT NULL
        UNION ALL
        SELECT 'md5', md5 FROM audience_staging WHERE md5 IS NOT NULL) s
 WHERE NOT EXISTS (SELECT 1 FROM audience_members m
                    WHERE m.audience_id = $1 AND m.hash_kind = s.kind AND m.hash = s.hash)
 ORDER BY 2, 3;

-- name: finish_import
-- Counts by kind; people are members of the primary kind (sha256 when there are any,
-- else md5); an include audience below $2 people is too small. Whether some member is
-- known only by MD5 (targeting then hashes referrals as MD5 too), and the members' Bloom
-- filter (services/common/audiences/bloom.py).
WITH counted AS (
    SELECT count(*) FILTER (WHERE hash_kind = 'sha256') AS sha256_count,
           count(*) FILTER (WHERE hash_kind = 'md5') AS md5_count
      FROM audience_members WHERE audience_id = $1
), people AS (
    SELECT sha256_count, md5_count,
           CASE WHEN sha256_count > 0 THEN sha256_count ELSE md5_count END AS member_count
      FROM counted
)
UPDATE audiences a
   SET sha256_count = p.sha256_count, md5_count = p.md5_count,
       member_count = p.member_count,
       -- $3: this import replaced the members; $4: it had MD5-only lines.
       md5_only = CASE WHEN $3 THEN $4 ELSE a.md5_only OR $4 END,
       -- $5: the Bloom filter of the staged SHA-256 members. Replacing (or a first
       -- import), it is the members'; adding, it joins theirs. A filter that was never
       -- built (NULL: imported before migration 0015) stays NULL: probed exactly.
       bloom = CASE WHEN $3 OR a.last_import_at IS NULL THEN $5::bit varying
                    ELSE a.bloom | $5::bit varying END,
       state = CASE WHEN a.kind = 'include' AND p.member_count < $2 THEN 'too_small'
                    ELSE 'ready' END,
       last_import_at = now(), updated_at = now()
  FROM people p
 WHERE a.id = $1
RETURNING a.id, a.account_id, a.name, a.kind, a.source, a.member_count, a.sha256_count,
          a.md5_count, a.state, a.last_import_at, a.created_at, a.updated_at, a.md5_only;

-- Sources: pulled audiences (an SFTP folder, a Mailchimp audience) and their schedule.

-- name: connection_kind
-- The kind of the account's connection (another account's is not found).
SELECT kind FROM connections WHERE account_id = $1 AND id = $2;

-- name: insert_source
-- The first pull is due at once.
INSERT INTO audience_sources (audience_id, account_id, kind, connection_id, settings,
                              interval_s, next_due_at)
VALUES ($1, $2, $3, $4, $5, $6, now());

-- name: get_sources
SELECT * FROM audience_sources WHERE account_id = $1 AND audience_id = ANY($2::uuid[]);

-- name: request_refresh
-- Due now. While a pull runs, due after its start: finish_pull keeps that, so the
-- source is pulled again once the running pull ends (it may have read the old files).
UPDATE audience_sources
   SET next_due_at = CASE WHEN lease_until > now() THEN greatest(now(), last_started_at)
                          ELSE least(next_due_at, now()) END
 WHERE account_id = $1 AND audience_id = $2
RETURNING *;

-- name: claim_due_sources
-- Sources due at $1 that no replica is pulling (a crashed one's lease has lapsed), leased
-- to the caller's token $3 for $4 seconds; SKIP LOCKED keeps replicas off each other's.
-- It stays due: a replica that dies mid-pull leaves it to the next once the lease lapses.
UPDATE audience_sources s
   SET lease_token = $3, lease_until = $1 + make_interval(secs => $4), last_started_at = $1
 WHERE s.audience_id IN (
        SELECT audience_id FROM audience_sources
         WHERE next_due_at <= $1 AND (lease_until IS NULL OR lease_until < $1)
         ORDER BY next_due_at
         LIMIT $2
           FOR UPDATE SKIP LOCKED)
RETURNING s.*;

-- name: source_connection
SELECT kind, settings, secrets FROM connections WHERE account_id = $1 AND id = $2;

-- name: renew_source_lease
UPDATE audience_sources SET lease_until = $3
 WHERE audience_id = $1 AND lease_token = $2
RETURNING audience_id;

-- name: finish_pull
-- Record a pull's outcome, only under the caller's lease (a replica whose lease lapsed
-- and was taken over records nothing). Due again at $5, unless a refresh was asked for
-- while this pull ran (due after its start: see request_refresh).
UPDATE audience_sources
   SET lease_token = NULL, lease_until = NULL, last_finished_at = $3, last_outcome = $4,
       next_due_at = CASE WHEN next_due_at > last_started_at THEN least(next_due_at, $5)
                          ELSE $5 END,
       failures = CASE WHEN $6 THEN 0 ELSE failures + 1 END
 WHERE audience_id = $1 AND lease_token = $2
RETURNING audience_id;

-- What the watermark monitor reads. Loaded by services/common/watermark_monitor.py.
-- Naming other sessions' transactions needs the pg_read_all_stats role (or superuser).

-- name: watermark_status
-- The safe watermark, the newest seq drawn, and how long the oldest committed referral
-- above the watermark has waited (seconds; 0 when none waits).
WITH mark AS (SELECT safe_referral_watermark() AS safe)
SELECT mark.safe,
       coalesce(pg_sequence_last_value('referral_seq'), 0) AS drawn,
       coalesce(extract(epoch FROM now() - (
           SELECT r.received_at FROM referrals r WHERE r.seq > mark.safe ORDER BY r.seq LIMIT 1
       )), 0)::float8 AS waited_s
  FROM mark;

-- name: watermark_blockers
-- Writing transactions anywhere on the cluster, oldest first: any of them can hold the
-- watermark back while it runs (transaction ids are cluster-wide).
SELECT pid, datname, usename, application_name, backend_xid::text AS xid,
       extract(epoch FROM now() - xact_start)::float8 AS age_s, state
  FROM pg_stat_activity
 WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
 ORDER BY xact_start
 LIMIT 5;

-- name: prepared_blockers
-- Prepared transactions: no session, and they hold the watermark until committed or
-- rolled back by hand (COMMIT PREPARED / ROLLBACK PREPARED).
SELECT gid, database, owner::text AS owner, transaction::text AS xid,
       extract(epoch FROM now() - prepared)::float8 AS age_s
  FROM pg_prepared_xacts
 ORDER BY prepared
 LIMIT 5;

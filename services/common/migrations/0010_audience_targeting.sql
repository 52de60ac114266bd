-- Suppression and targeting by custom audiences (issue 15): a task, or a connection that
-- delivers in real time, may name audiences of its account. An exclude audience keeps its
-- members out; include audiences let only their members through (a member of any one).
ALTER TABLE tasks ADD COLUMN audience_ids uuid[] NOT NULL DEFAULT '{}';
ALTER TABLE connections ADD COLUMN audience_ids uuid[] NOT NULL DEFAULT '{}';

-- A scheduled delivery fixes, at its first attempt, which referrals of its range the
-- audiences held back: every retry, resend and re-download renders the same rows, however
-- the audiences change afterwards. NULL: not fixed yet (or no audiences).
ALTER TABLE deliveries ADD COLUMN suppressed bigint;
CREATE TABLE delivery_suppressions (
    delivery_id  uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    seq          bigint NOT NULL,
    PRIMARY KEY (delivery_id, seq)
);

-- Whether some member is known only by its MD5 (an MD5 line of an upload): matching hashes
-- referrals as MD5 too only for such audiences (a plain email is stored both ways, so its
-- SHA-256 finds it), which halves the work of the common case.
ALTER TABLE audiences ADD COLUMN md5_only boolean NOT NULL DEFAULT false;

-- Referrals a live connection's audiences held back (passed by its cursor without a call).
ALTER TABLE live_cursors ADD COLUMN suppressed bigint NOT NULL DEFAULT 0;

-- The normalised email an audience member is matched by: trimmed and lower-cased (ingest
-- keeps emails ASCII and trimmed, and the "C" collation lower-cases ASCII only, whatever
-- the database's locale), as bytes to hash. It must agree with the upload's normalisation
-- (services/common/audiences/lines.py); tests/integration/test_audience_targeting.py
-- compares the two over every class of address ingest accepts. The match itself is
-- services/common/audiences/targets.held_back(), set-based.
-- STABLE as convert_to is: PostgreSQL inlines it then (declared IMMUTABLE it was called per
-- row, at 3.6 times the cost).
CREATE FUNCTION audience_email_key(email text) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE STRICT
    AS $$ SELECT convert_to(lower(btrim(email) COLLATE "C"), 'UTF8') $$;

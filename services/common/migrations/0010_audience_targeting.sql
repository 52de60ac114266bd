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

-- Referrals a live connection's audiences held back (passed by its cursor without a call).
ALTER TABLE live_cursors ADD COLUMN suppressed bigint NOT NULL DEFAULT 0;

-- The one match rule in SQL: the normalised email (trimmed and lower-cased; ingest keeps
-- emails ASCII and trimmed, and the "C" collation lower-cases ASCII only, whatever the
-- database's locale) hashed as each kind an audience may hold. It must agree with
-- services/common/audiences normalisation; tests/integration/test_audience_targeting.py
-- compares the two over every class of address ingest accepts.
CREATE FUNCTION audience_email_key(email text) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT convert_to(lower(btrim(email) COLLATE "C"), 'UTF8') $$;

-- Whether the email is a member of any of the audiences (by SHA-256, else by MD5).
CREATE FUNCTION audience_hit(email text, ids uuid[]) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
SELECT EXISTS (SELECT 1 FROM audience_members m
                WHERE m.audience_id = ANY (ids) AND m.hash_kind = 'sha256'
                  AND m.hash = sha256(audience_email_key(email)))
    OR EXISTS (SELECT 1 FROM audience_members m
                WHERE m.audience_id = ANY (ids) AND m.hash_kind = 'md5'
                  AND m.hash = decode(md5(audience_email_key(email)), 'hex'))
$$;

-- Whether the audiences hold this referral back: a member of an exclude audience, or
-- (when there are include audiences) a member of none of them. Empty arrays: never.
CREATE FUNCTION referral_suppressed(email text, exclude_ids uuid[], include_ids uuid[])
    RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
SELECT (cardinality(exclude_ids) > 0 AND audience_hit(email, exclude_ids))
    OR (cardinality(include_ids) > 0 AND NOT audience_hit(email, include_ids))
$$;

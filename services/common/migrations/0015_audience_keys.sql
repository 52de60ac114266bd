-- Audience checks at the cost of the range, not of the audience (issue 15: at most 10 %
-- more time for a delivery). Measured on 200,000 referrals against a 1,000,000-person
-- audience: hashing each referral's email during the delivery cost more than the
-- delivery's own rendering, and hashing (or probing) every member of a big audience cost
-- more again. So each referral's key is hashed once, when it is stored, and each audience
-- keeps a Bloom filter of its members: a referral whose filter bits are not all set is
-- no member, without touching the audience; only the few others are probed exactly.

-- The normalised email (trimmed, ASCII lower-cased) as bytes, now built of immutable
-- parts only (text to bytea by its text form, backslashes doubled so that none reads as
-- an escape), so that a stored column may use it and PostgreSQL still inlines it. The
-- bytes are those of convert_to(..., 'UTF8') in a UTF-8 database (ingest keeps emails
-- ASCII anyway); tests/integration/test_audience_targeting.py compares the key with the
-- upload's Python normalisation over every class of address ingest accepts.
CREATE OR REPLACE FUNCTION audience_email_key(email text) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT replace(lower(btrim(email) COLLATE "C"), '\', '\\')::bytea $$;

-- Its SHA-256, stored with the referral (the table is rewritten once, here). Measured
-- (python -m tests.bench ingest, the same day before and after): IngestBatch 34.7k ->
-- 30.7k referrals/s, PostgreSQL's CPU per referral 27.3 -> 34.9 us. Hashing in the ingest
-- process instead would spare PostgreSQL most of that.
ALTER TABLE referrals ADD COLUMN email_key bytea
    GENERATED ALWAYS AS (sha256(audience_email_key(email))) STORED;

-- The Bloom filter of an audience's SHA-256 members (services/common/audiences/bloom.py:
-- 2^24 bits, three positions taken from a hash's first nine bytes), set by every import
-- in the transaction that changes the members, so a snapshot that sees the members sees
-- their filter. NULL (an audience imported before this migration): every referral is
-- probed exactly, as before.
ALTER TABLE audiences ADD COLUMN bloom bit varying;

-- What a scheduled delivery's audiences held back, one row per delivery (instead of one
-- per referral, as 0010 kept it): recording 20,000 rows at the end of a first render took
-- 0.2-0.3 s, a tenth of the delivery; one array takes milliseconds. The seqs ascend.
CREATE TABLE delivery_held_back (
    delivery_id  uuid PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    seqs         bigint[] NOT NULL
);
INSERT INTO delivery_held_back (delivery_id, seqs)
SELECT delivery_id, array_agg(seq ORDER BY seq) FROM delivery_suppressions GROUP BY delivery_id;
DROP TABLE delivery_suppressions;

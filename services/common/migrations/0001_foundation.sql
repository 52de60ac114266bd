-- Accounts, campaigns and the append-only referral log with its safe watermark.

CREATE TABLE accounts (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    time_zone   text NOT NULL DEFAULT 'UTC',
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz
);

CREATE TABLE campaigns (
    id          uuid PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz
);
CREATE INDEX campaigns_account_idx ON campaigns (account_id, created_at, id);

-- Referral positions. A writer must hold a transaction id *before* it draws a seq
-- (referral_next_seq does both), so that every in-flight seq belongs to a transaction
-- that a snapshot taken afterwards still lists as running.
CREATE SEQUENCE referral_seq AS bigint;

CREATE FUNCTION referral_next_seq() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval('referral_seq');
END
$$;

CREATE TABLE referrals (
    seq                 bigint PRIMARY KEY DEFAULT referral_next_seq(),
    account_id          uuid NOT NULL REFERENCES accounts (id),
    campaign_id         uuid NOT NULL REFERENCES campaigns (id),
    partner_referral_id text NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    email               text NOT NULL,
    title               text NOT NULL DEFAULT '',
    first_name          text NOT NULL DEFAULT '',
    last_name           text NOT NULL DEFAULT '',
    gender              text NOT NULL DEFAULT '',
    date_of_birth       date,
    mobile              text NOT NULL DEFAULT '',
    phone               text NOT NULL DEFAULT '',
    address_line1       text NOT NULL DEFAULT '',
    address_line2       text NOT NULL DEFAULT '',
    city                text NOT NULL DEFAULT '',
    state               text NOT NULL DEFAULT '',
    postcode            text NOT NULL DEFAULT '',
    country             text NOT NULL DEFAULT '',
    language            text NOT NULL DEFAULT '',
    partner_id          text NOT NULL DEFAULT '',
    publisher_id        text NOT NULL DEFAULT '',
    creative_id         text NOT NULL DEFAULT '',
    ad_text             text NOT NULL DEFAULT '',
    audience            text NOT NULL DEFAULT '',
    opted_in_at         timestamptz NOT NULL,
    ip_address          inet,
    user_agent          text NOT NULL DEFAULT '',
    browser             text NOT NULL DEFAULT '',
    extra               jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT referrals_partner_id_key UNIQUE (account_id, partner_referral_id)
);
CREATE INDEX referrals_campaign_seq_idx ON referrals (campaign_id, seq);
CREATE INDEX referrals_account_received_idx ON referrals (account_id, received_at);

-- Points (last_seq, horizon) remembered by safe_referral_watermark(): once every
-- transaction with an id below horizon has ended, every seq up to last_seq is final.
CREATE TABLE referral_watermark_checkpoints (
    horizon  xid8 PRIMARY KEY,
    last_seq bigint NOT NULL
);

-- The highest seq below which no in-flight transaction can still commit a referral.
CREATE FUNCTION safe_referral_watermark() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    drawn    bigint;
    snap     pg_snapshot;
    best     bigint;
BEGIN
    -- Order matters: read the sequence first, then take the snapshot, so every
    -- transaction that drew a seq <= drawn has an id below the snapshot's xmax.
    drawn := coalesce(pg_sequence_last_value('referral_seq'), 0);
    snap := pg_current_snapshot();
    IF pg_snapshot_xmin(snap) = pg_snapshot_xmax(snap) THEN
        best := drawn;  -- no transaction with an id was running
    ELSE
        SELECT max(last_seq) INTO best
          FROM referral_watermark_checkpoints
         WHERE horizon <= pg_snapshot_xmin(snap);
        INSERT INTO referral_watermark_checkpoints (horizon, last_seq)
        VALUES (pg_snapshot_xmax(snap), drawn)
        ON CONFLICT (horizon) DO UPDATE SET last_seq = greatest(
            referral_watermark_checkpoints.last_seq, excluded.last_seq);
    END IF;
    best := coalesce(best, 0);
    -- Keep the newest usable checkpoint (it may still be the answer next time).
    DELETE FROM referral_watermark_checkpoints
     WHERE last_seq < best;
    RETURN best;
END
$$;

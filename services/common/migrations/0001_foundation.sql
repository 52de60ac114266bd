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

-- Referral positions. A writer takes its transaction id *before* it draws a seq
-- (referral_next_seq does both), so any transaction id taken after a seq was drawn is
-- above the id of the transaction holding that seq: safe_referral_watermark() relies on it.
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
    -- No foreign keys, on purpose: they cost a third of insert time, and the only insert
    -- path joins the active campaign and account; campaigns and accounts are archived,
    -- never deleted.
    account_id          uuid NOT NULL,
    campaign_id         uuid NOT NULL,
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

-- Checkpoints kept by safe_referral_watermark(): once no transaction with an id below
-- `horizon` is running, every seq up to `last_seq` is final (committed or rolled back).
-- `final` marks a checkpoint whose seqs were already final when it was written: usable by
-- every later call, even one with an older id (which could not see it as settled).
CREATE TABLE referral_watermark_checkpoints (
    horizon  xid8 PRIMARY KEY,
    last_seq bigint NOT NULL,
    final    boolean NOT NULL DEFAULT false
);

-- The highest seq below which no in-flight transaction can still commit a referral.
-- Readers take (cursor, watermark] and move their cursor to the watermark: they never
-- skip a referral however transactions interleave, and the value never decreases.
--
-- Why a checkpoint and not the current snapshot alone: a snapshot's xmax is
-- latestCompletedXid + 1, not the next id to be assigned, and running transactions at
-- or above it are not listed. So "xmin = xmax" does not mean nothing is running: the
-- newest writer may hold an uncommitted seq. Instead the function takes an id of its
-- own *after* reading the sequence (so above every writer of those seqs) and records it.
-- That checkpoint is settled once a later snapshot's xmin reaches it.
--
-- Call it before the calling transaction writes anything (or on its own, as the store
-- does): an id taken earlier than the sequence read would prove nothing.
CREATE FUNCTION safe_referral_watermark() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    drawn   bigint;
    own_xid xid8;
    oldest  xid8;
    best    bigint;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'safe_referral_watermark() must run before its transaction writes'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    -- Order matters: every writer of a seq <= drawn took its id before drawing it ...
    drawn := coalesce(pg_sequence_last_value('referral_seq'), 0);
    -- ... ids are handed out in order, so ours, taken now, is above all of theirs ...
    own_xid := pg_current_xact_id();
    -- ... and a snapshot taken now lists every running transaction below ours.
    oldest := pg_snapshot_xmin(pg_current_snapshot());

    SELECT max(last_seq) INTO best
      FROM referral_watermark_checkpoints
     WHERE final OR horizon <= oldest;
    best := coalesce(best, 0);
    IF own_xid <= oldest THEN
        -- Nothing older than us runs: all drawn seqs are final. Our checkpoint is settled
        -- for every later call (new ids are higher), which keeps the value monotonic.
        best := greatest(best, drawn);
        DELETE FROM referral_watermark_checkpoints WHERE last_seq <= best;
        INSERT INTO referral_watermark_checkpoints (horizon, last_seq, final)
        VALUES (own_xid, best, true);
    ELSE
        -- A checkpoint that covers no more than an existing one would only settle later.
        IF NOT EXISTS (SELECT 1 FROM referral_watermark_checkpoints WHERE last_seq >= drawn) THEN
            INSERT INTO referral_watermark_checkpoints (horizon, last_seq)
            VALUES (own_xid, drawn);
        END IF;
        -- Keep the row that gave `best`: a later call may still need it.
        DELETE FROM referral_watermark_checkpoints WHERE last_seq < best;
    END IF;
    RETURN best;
END
$$;

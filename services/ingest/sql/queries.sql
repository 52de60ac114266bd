-- Every statement the ingest service runs. Loaded by services/ingest/store.py.

-- name: insert_referrals
-- One statement for small batches (a coalesced group of unary calls): the rows arrive as
-- a JSON array of column-keyed objects; seqs come from the column default, which takes
-- the transaction id first. Same rules as insert_staged_referrals.
WITH inserted AS (
    INSERT INTO referrals (account_id, campaign_id, partner_referral_id, email, title,
                           first_name, last_name, gender, date_of_birth, mobile, phone,
                           address_line1, address_line2, city, state, postcode, country,
                           language, partner_id, publisher_id, creative_id, ad_text, audience,
                           opted_in_at, ip_address, user_agent, browser, extra)
    SELECT i.account_id, i.campaign_id, i.partner_referral_id, i.email, i.title,
           i.first_name, i.last_name, i.gender, i.date_of_birth, i.mobile, i.phone,
           i.address_line1, i.address_line2, i.city, i.state, i.postcode, i.country,
           i.language, i.partner_id, i.publisher_id, i.creative_id, i.ad_text, i.audience,
           i.opted_in_at, i.ip_address, i.user_agent, i.browser, i.extra
      FROM json_populate_recordset(NULL::referrals, $1::text::json) i
      JOIN campaigns c ON c.id = i.campaign_id AND c.account_id = i.account_id
                      AND c.status = 'active'
      JOIN accounts a ON a.id = i.account_id AND a.status = 'active'
     ORDER BY i.account_id, i.partner_referral_id
    ON CONFLICT (account_id, partner_referral_id) DO NOTHING
    RETURNING seq, account_id, partner_referral_id
), notified AS MATERIALIZED (
    SELECT pg_notify('referrals_ingested', max(seq)::text) FROM inserted HAVING count(*) > 0
)
-- One row of three arrays: far cheaper to send and decode than a row per referral.
SELECT array_agg(inserted.seq) AS seqs, array_agg(inserted.account_id::text) AS accounts,
       array_agg(inserted.partner_referral_id) AS partners
  FROM inserted LEFT JOIN notified ON true;

-- name: draw_referral_seqs
-- The direct path (store.insert_copy): of the campaigns $1, the active ones of active
-- accounts, as "campaign account" pairs; and $2 seqs, drawn after the transaction took
-- its id, as the safe watermark requires (see insert_staged_referrals).
WITH writer AS MATERIALIZED (
    SELECT pg_current_xact_id() AS xid
)
SELECT ARRAY(
           SELECT c.id::text || ' ' || c.account_id::text
             FROM campaigns c JOIN accounts a ON a.id = c.account_id AND a.status = 'active'
            WHERE c.id = ANY($1::uuid[]) AND c.status = 'active'
       ) AS active,
       ARRAY(
           SELECT nextval('referral_seq') FROM writer, generate_series(1, $2::integer)
       ) AS seqs;

-- name: notify_referrals_ingested
-- Sent at commit, like the NOTIFY of the insert statements.
SELECT pg_notify('referrals_ingested', $1::bigint::text);

-- name: create_referral_staging
-- Per connection: valid rows are COPied here, then moved by insert_staged_referrals.
CREATE TEMP TABLE IF NOT EXISTS referral_staging (
    account_id uuid, campaign_id uuid, partner_referral_id text, email text, title text,
    first_name text, last_name text, gender text, date_of_birth date, mobile text,
    phone text, address_line1 text, address_line2 text, city text, state text,
    postcode text, country text, language text, partner_id text, publisher_id text,
    creative_id text, ad_text text, audience text, opted_in_at timestamptz,
    ip_address inet, user_agent text, browser text, extra jsonb
) ON COMMIT DELETE ROWS;

-- name: insert_staged_referrals
-- Stores the staged rows whose campaign and account are active; skips partner ids
-- already stored. $1 names the campaigns of the staged rows. Wakes real-time delivery
-- through NOTIFY (sent at commit).
-- Seqs are drawn here rather than by the column default (a PL/pgSQL call per row): the
-- transaction holds an id by now (the staging COPY wrote), and `writer` makes sure of
-- it, so every seq is drawn after the id, as the safe watermark requires.
-- Rows go in as staged, and the caller stages them in key order: concurrent batches
-- sharing partner ids then wait on each other's unique-index entries in one order
-- instead of deadlocking (an ORDER BY here would copy every wide row through a sort,
-- a tenth of the statement's time; the caller retries if a deadlock happens anyway).
WITH writer AS MATERIALIZED (
    SELECT pg_current_xact_id() AS xid
), active AS MATERIALIZED (
    -- Materialized: a few rows, hashed once, not an index probe per staged row.
    SELECT c.id, c.account_id
      FROM campaigns c JOIN accounts a ON a.id = c.account_id AND a.status = 'active'
     WHERE c.id = ANY($1::uuid[]) AND c.status = 'active'
), inserted AS (
    INSERT INTO referrals (seq, account_id, campaign_id, partner_referral_id, email, title,
                           first_name, last_name, gender, date_of_birth, mobile, phone,
                           address_line1, address_line2, city, state, postcode, country,
                           language, partner_id, publisher_id, creative_id, ad_text, audience,
                           opted_in_at, ip_address, user_agent, browser, extra)
    SELECT nextval('referral_seq'), i.account_id, i.campaign_id, i.partner_referral_id,
           i.email, i.title,
           i.first_name, i.last_name, i.gender, i.date_of_birth, i.mobile, i.phone,
           i.address_line1, i.address_line2, i.city, i.state, i.postcode, i.country,
           i.language, i.partner_id, i.publisher_id, i.creative_id, i.ad_text, i.audience,
           i.opted_in_at, i.ip_address, i.user_agent, i.browser, i.extra
      FROM writer, referral_staging i
      JOIN active c ON c.id = i.campaign_id AND c.account_id = i.account_id
    ON CONFLICT (account_id, partner_referral_id) DO NOTHING
    RETURNING seq, account_id, partner_referral_id
), notified AS MATERIALIZED (
    SELECT pg_notify('referrals_ingested', max(seq)::text) FROM inserted HAVING count(*) > 0
)
-- One row of three arrays: far cheaper to send and decode than a row per referral.
SELECT array_agg(inserted.seq) AS seqs, array_agg(inserted.account_id::text) AS accounts,
       array_agg(inserted.partner_referral_id) AS partners
  FROM inserted LEFT JOIN notified ON true;

-- name: existing_referrals
SELECT r.seq, r.account_id, r.partner_referral_id
  FROM referrals r
  JOIN unnest($1::uuid[], $2::text[]) AS k(account_id, partner_referral_id)
    ON r.account_id = k.account_id AND r.partner_referral_id = k.partner_referral_id;

-- name: campaign_states
SELECT c.id, c.account_id, c.status, a.status AS account_status
  FROM campaigns c JOIN accounts a ON a.id = c.account_id
 WHERE c.id = ANY($1::uuid[]);

-- name: safe_watermark
SELECT safe_referral_watermark();

-- name: referral_seqs_in_range
-- Seqs in (after, through], for readers that walk the log up to the watermark.
SELECT seq FROM referrals WHERE seq > $1 AND seq <= $2 ORDER BY seq;

-- name: insert_account
INSERT INTO accounts (id, name, time_zone) VALUES ($1, $2, $3)
ON CONFLICT (id) DO NOTHING
RETURNING *;

-- name: get_account
SELECT * FROM accounts WHERE id = $1;

-- name: list_accounts
SELECT * FROM accounts
 WHERE ($1::boolean OR status = 'active')
   AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
 ORDER BY created_at, id
 LIMIT $4;

-- name: archive_account
WITH account AS (
    UPDATE accounts SET status = 'archived', archived_at = coalesce(archived_at, now())
     WHERE id = $1
    RETURNING *
), campaigns_archived AS (
    UPDATE campaigns SET status = 'archived', archived_at = coalesce(archived_at, now())
     WHERE account_id = $1 AND status = 'active'
)
SELECT * FROM account;

-- name: insert_campaign
INSERT INTO campaigns (id, account_id, name) VALUES ($1, $2, $3)
ON CONFLICT (id) DO NOTHING
RETURNING *;

-- name: get_campaign
SELECT * FROM campaigns WHERE id = $1 AND account_id = $2;

-- name: list_campaigns
SELECT * FROM campaigns
 WHERE account_id = $1
   AND ($2::boolean OR status = 'active')
   AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))
 ORDER BY created_at, id
 LIMIT $5;

-- name: archive_campaign
UPDATE campaigns SET status = 'archived', archived_at = coalesce(archived_at, now())
 WHERE id = $1 AND account_id = $2
RETURNING *;

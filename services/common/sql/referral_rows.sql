-- Referral rows in the engine's row shape (services/common/layouts/catalog.py ROW_FIELDS):
-- every column text, NULL as '', timestamps in the session zone (set to UTC first).
-- Loaded by services/common/referral_rows.py.

-- name: render_session
-- Fixes the text forms of timestamps and dates for the rest of the transaction.
SELECT set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO, YMD', true);

-- name: quick_start
-- For a stream whose first byte someone waits for (exports): JIT still compiles the
-- expressions but skips LLVM's inlining and optimisation, which on a 2M-row plan cost
-- ~400 ms before the first row for ~15 % more throughput (measured on PostgreSQL 15).
SELECT set_config('jit_inline_above_cost', '-1', true),
       set_config('jit_optimize_above_cost', '-1', true);

-- name: audience_session
-- For a render that tests audiences: the per-referral probe makes the plan look costly,
-- and LLVM then spent 1.1 s compiling it (200,000 referrals; more than the probes cost).
SELECT set_config('jit', 'off', true), set_config('max_parallel_workers_per_gather', '0', true);

-- name: referral_rows_in_range
-- One account's referrals with seq in ($2, $3], optionally of some campaigns ($4), in order;
-- optionally only those whose $8 ('received_at' or 'opted_in_at') is in [$6, $7), and
-- not those the audiences held back from delivery $9 (delivery_held_back; NULL: none).
-- Those the audiences $10-$13 hold back now (AudienceSplit.arguments(); empty: none) come
-- with their seq negated, for the reader to leave out and report (a delivery's first
-- render records them): referral_rows.py puts that test, the one rule written by
-- services/common/audiences/targets.holds_back(), in place of the `false` below.
-- $5 names the fields the caller reads (NULL: all); the others come as '' so that neither
-- the server nor the client spends time on them. The renderer passes the list as literals
-- (COPY cannot take parameters), so the planner folds every CASE away.
SELECT CASE WHEN /* audiences */ false THEN -r.seq ELSE r.seq END AS seq,
       CASE WHEN $5::text[] IS NULL OR 'account_id' = ANY ($5) THEN r.account_id::text ELSE '' END AS account_id,
       CASE WHEN $5::text[] IS NULL OR 'campaign_id' = ANY ($5) THEN r.campaign_id::text ELSE '' END AS campaign_id,
       CASE WHEN $5::text[] IS NULL OR 'partner_referral_id' = ANY ($5) THEN r.partner_referral_id::text ELSE '' END AS partner_referral_id,
       CASE WHEN $5::text[] IS NULL OR 'received_at' = ANY ($5) THEN r.received_at::text ELSE '' END AS received_at,
       CASE WHEN $5::text[] IS NULL OR 'email' = ANY ($5) THEN r.email::text ELSE '' END AS email,
       CASE WHEN $5::text[] IS NULL OR 'title' = ANY ($5) THEN r.title::text ELSE '' END AS title,
       CASE WHEN $5::text[] IS NULL OR 'first_name' = ANY ($5) THEN r.first_name::text ELSE '' END AS first_name,
       CASE WHEN $5::text[] IS NULL OR 'last_name' = ANY ($5) THEN r.last_name::text ELSE '' END AS last_name,
       CASE WHEN $5::text[] IS NULL OR 'gender' = ANY ($5) THEN r.gender::text ELSE '' END AS gender,
       CASE WHEN $5::text[] IS NULL OR 'date_of_birth' = ANY ($5) THEN coalesce(r.date_of_birth::text, '') ELSE '' END AS date_of_birth,
       CASE WHEN $5::text[] IS NULL OR 'mobile' = ANY ($5) THEN r.mobile::text ELSE '' END AS mobile,
       CASE WHEN $5::text[] IS NULL OR 'phone' = ANY ($5) THEN r.phone::text ELSE '' END AS phone,
       CASE WHEN $5::text[] IS NULL OR 'address_line1' = ANY ($5) THEN r.address_line1::text ELSE '' END AS address_line1,
       CASE WHEN $5::text[] IS NULL OR 'address_line2' = ANY ($5) THEN r.address_line2::text ELSE '' END AS address_line2,
       CASE WHEN $5::text[] IS NULL OR 'city' = ANY ($5) THEN r.city::text ELSE '' END AS city,
       CASE WHEN $5::text[] IS NULL OR 'state' = ANY ($5) THEN r.state::text ELSE '' END AS state,
       CASE WHEN $5::text[] IS NULL OR 'postcode' = ANY ($5) THEN r.postcode::text ELSE '' END AS postcode,
       CASE WHEN $5::text[] IS NULL OR 'country' = ANY ($5) THEN r.country::text ELSE '' END AS country,
       CASE WHEN $5::text[] IS NULL OR 'language' = ANY ($5) THEN r.language::text ELSE '' END AS language,
       CASE WHEN $5::text[] IS NULL OR 'partner_id' = ANY ($5) THEN r.partner_id::text ELSE '' END AS partner_id,
       CASE WHEN $5::text[] IS NULL OR 'publisher_id' = ANY ($5) THEN r.publisher_id::text ELSE '' END AS publisher_id,
       CASE WHEN $5::text[] IS NULL OR 'creative_id' = ANY ($5) THEN r.creative_id::text ELSE '' END AS creative_id,
       CASE WHEN $5::text[] IS NULL OR 'ad_text' = ANY ($5) THEN r.ad_text::text ELSE '' END AS ad_text,
       CASE WHEN $5::text[] IS NULL OR 'audience' = ANY ($5) THEN r.audience::text ELSE '' END AS audience,
       CASE WHEN $5::text[] IS NULL OR 'opted_in_at' = ANY ($5) THEN r.opted_in_at::text ELSE '' END AS opted_in_at,
       CASE WHEN $5::text[] IS NULL OR 'ip_address' = ANY ($5) THEN coalesce(host(r.ip_address), '') ELSE '' END AS ip_address,
       CASE WHEN $5::text[] IS NULL OR 'user_agent' = ANY ($5) THEN r.user_agent::text ELSE '' END AS user_agent,
       CASE WHEN $5::text[] IS NULL OR 'browser' = ANY ($5) THEN r.browser::text ELSE '' END AS browser,
       CASE WHEN $5::text[] IS NULL OR 'extra' = ANY ($5) THEN r.extra::text ELSE '' END AS extra
  FROM referrals r
 WHERE r.account_id = $1 AND r.seq > $2 AND r.seq <= $3
   AND ($4::uuid[] IS NULL OR r.campaign_id = ANY ($4))
   AND ($8::text IS NULL OR (CASE WHEN $8 = 'opted_in_at' THEN r.opted_in_at ELSE r.received_at END)
        >= $6::timestamptz AND (CASE WHEN $8 = 'opted_in_at' THEN r.opted_in_at ELSE r.received_at END)
        < $7::timestamptz)
   AND ($9::uuid IS NULL OR r.seq NOT IN (SELECT unnest(x.seqs) FROM delivery_held_back x
                                           WHERE x.delivery_id = $9))
 ORDER BY r.seq;

-- name: latest_referral_rows
-- The account's $2 most recently received referrals, oldest first.
SELECT * FROM (
    SELECT r.seq, r.account_id, r.campaign_id, r.partner_referral_id, r.received_at,
           r.email, r.title, r.first_name, r.last_name, r.gender,
           coalesce(r.date_of_birth::text, '') AS date_of_birth, r.mobile, r.phone,
           r.address_line1, r.address_line2, r.city, r.state, r.postcode, r.country,
           r.language, r.partner_id, r.publisher_id, r.creative_id, r.ad_text, r.audience,
           r.opted_in_at, coalesce(host(r.ip_address), '') AS ip_address, r.user_agent,
           r.browser, r.extra
      FROM referrals r
     WHERE r.account_id = $1
     ORDER BY r.received_at DESC, r.seq DESC
     LIMIT $2
) latest
 ORDER BY seq;

-- name: render_context
-- What a render of one account needs besides rows: its zone and its campaigns' names.
SELECT a.time_zone,
       coalesce((SELECT jsonb_object_agg(c.id::text, c.name)
                   FROM campaigns c WHERE c.account_id = a.id), '{}'::jsonb) AS campaign_names
  FROM accounts a
 WHERE a.id = $1;

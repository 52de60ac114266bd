-- Referral rows in the engine's row shape (services/common/layouts/catalog.py ROW_FIELDS):
-- every column text, NULL as '', timestamps in the session zone (set to UTC first).
-- Loaded by services/common/referral_rows.py.

-- name: render_session
-- Fixes the text forms of timestamps and dates for the rest of the transaction.
SELECT set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO, YMD', true);

-- name: referral_rows_in_range
-- One account's referrals with seq in ($2, $3], optionally of one campaign ($4), in order.
SELECT r.seq, r.account_id, r.campaign_id, r.partner_referral_id, r.received_at,
       r.email, r.title, r.first_name, r.last_name, r.gender,
       coalesce(r.date_of_birth::text, '') AS date_of_birth, r.mobile, r.phone,
       r.address_line1, r.address_line2, r.city, r.state, r.postcode, r.country, r.language,
       r.partner_id, r.publisher_id, r.creative_id, r.ad_text, r.audience, r.opted_in_at,
       coalesce(host(r.ip_address), '') AS ip_address, r.user_agent, r.browser, r.extra
  FROM referrals r
 WHERE r.account_id = $1 AND r.seq > $2 AND r.seq <= $3
   AND ($4::uuid IS NULL OR r.campaign_id = $4)
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

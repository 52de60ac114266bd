-- What the export API reads about referrals. Loaded by services/export/referral_store.py.

-- name: pin
-- Where an export stops: the safe watermark (every seq at or below it is committed or
-- will never be), and the primary's WAL position then, which a replica must have
-- replayed before it can serve the same rows.
SELECT safe_referral_watermark() AS watermark, pg_current_wal_lsn()::text AS lsn;

-- name: replayed
-- Whether this server has replayed WAL up to $1 (a server that is not a standby has).
SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, true);

-- name: page_referrals
-- A page of the account's referrals, newest first: at or below the watermark $2 and
-- below seq $3 (the previous page's last); optionally of some campaigns ($4), in a time
-- frame ($5 field, [$6, $7)), or with one partner id ($8).
SELECT r.seq, r.account_id, r.campaign_id, r.partner_referral_id, r.received_at, r.email,
       r.title, r.first_name, r.last_name, r.gender, r.date_of_birth, r.mobile, r.phone,
       r.address_line1, r.address_line2, r.city, r.state, r.postcode, r.country, r.language,
       r.partner_id, r.publisher_id, r.creative_id, r.ad_text, r.audience, r.opted_in_at,
       r.ip_address, r.user_agent, r.browser, r.extra,
       host(r.ip_address) AS ip_text, c.name AS campaign_name
  FROM referrals r
  LEFT JOIN campaigns c ON c.id = r.campaign_id
 WHERE r.account_id = $1 AND r.seq <= $2 AND r.seq < $3
   AND ($4::uuid[] IS NULL OR r.campaign_id = ANY ($4))
   AND ($5::text IS NULL OR (CASE WHEN $5 = 'opted_in_at' THEN r.opted_in_at ELSE r.received_at END)
        >= $6::timestamptz AND (CASE WHEN $5 = 'opted_in_at' THEN r.opted_in_at ELSE r.received_at END)
        < $7::timestamptz)
   AND ($8::text IS NULL OR r.partner_referral_id = $8)
 ORDER BY r.seq DESC
 LIMIT $9;

-- name: get_referral
SELECT r.seq, r.account_id, r.campaign_id, r.partner_referral_id, r.received_at, r.email,
       r.title, r.first_name, r.last_name, r.gender, r.date_of_birth, r.mobile, r.phone,
       r.address_line1, r.address_line2, r.city, r.state, r.postcode, r.country, r.language,
       r.partner_id, r.publisher_id, r.creative_id, r.ad_text, r.audience, r.opted_in_at,
       r.ip_address, r.user_agent, r.browser, r.extra,
       host(r.ip_address) AS ip_text, c.name AS campaign_name
  FROM referrals r
  LEFT JOIN campaigns c ON c.id = r.campaign_id
 WHERE r.account_id = $1 AND r.seq = $2;

-- name: campaigns_of
-- Which of the ids $2 are campaigns of the account $1.
SELECT id FROM campaigns WHERE account_id = $1 AND id = ANY ($2::uuid[]);

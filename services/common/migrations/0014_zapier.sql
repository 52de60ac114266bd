-- Zapier REST-hook subscriptions (the "new referral" trigger of Handoff's Zapier app).
-- A subscription delivers through the real-time path: it owns an API connection (made in
-- the same transaction) whose live loop POSTs each new referral of its scope to the
-- target URL. Removing a subscription (unsubscribed, or a 410 from the target URL: the Zap
-- was turned off) deletes that connection and keeps this row, with when and why.
CREATE TABLE zapier_subscriptions (
    id              uuid PRIMARY KEY,
    account_id      uuid NOT NULL REFERENCES accounts (id),
    -- The API connection delivering it; NULL once the subscription is removed.
    connection_id   uuid UNIQUE REFERENCES connections (id) ON DELETE SET NULL,
    target_url      text NOT NULL,
    event           text NOT NULL,
    campaign_ids    uuid[],  -- NULL: every campaign of the account, future ones too
    -- The credential that subscribed (Zapier holds the user's account token).
    credential_id   uuid,
    state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'removed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz,
    removed_reason  text,
    CHECK ((state = 'active') = (removed_at IS NULL))
);
CREATE INDEX zapier_subscriptions_account_idx
    ON zapier_subscriptions (account_id, created_at DESC, id DESC);

-- The one rule for removing a subscription, whoever removes it (the unsubscribe call, the
-- live loop on a 410): recorded, and its connection (cursor, waiting referrals) deleted.
-- Returns the subscription's id, or NULL when it was not active.
CREATE FUNCTION zapier_remove_subscription(p_id uuid, p_at timestamptz, p_reason text)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    owned uuid;
BEGIN
    SELECT connection_id INTO owned FROM zapier_subscriptions
     WHERE id = p_id AND state = 'active'
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE zapier_subscriptions
       SET state = 'removed', removed_at = p_at, removed_reason = p_reason,
           connection_id = NULL
     WHERE id = p_id;
    DELETE FROM connections WHERE id = owned;
    -- At commit, the delivery replica running its live loop stops it at once (the
    -- supervisor's claim round no longer finds the connection) instead of at its next
    -- lease renewal.
    PERFORM pg_notify('live_wakeup', owned::text);
    RETURN p_id;
END
$$;

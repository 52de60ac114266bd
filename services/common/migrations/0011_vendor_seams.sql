-- Vendor seams (issue 15): vendor connection kinds, live cursors for every connection that
-- runs in real time (not only API ones), per-referral outcomes of record deliveries, and
-- the per-key concurrency slots shared by every delivery replica.

-- Every vendor kind is listed here once (Sailthru too, so that its migration need not
-- replace the constraint again).
ALTER TABLE connections DROP CONSTRAINT IF EXISTS connections_kind_check;
ALTER TABLE connections ADD CONSTRAINT connections_kind_check
    CHECK (kind IN ('sftp', 'ftps', 'email', 'api', 'mailchimp', 'sailthru'));

-- A live cursor for an API connection, and for a vendor connection whose settings say
-- mode 'realtime' — made with the connection, or when it switches to real time (it then
-- receives the referrals received from that moment on). A connection switched back to
-- 'scheduled' keeps its cursor; the live loop does not run it (see live_claim).
CREATE OR REPLACE FUNCTION live_cursor_for_api_connection() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'api' OR NEW.settings->>'mode' = 'realtime' THEN
        INSERT INTO live_cursors (connection_id, account_id, starts_at)
        VALUES (NEW.id, NEW.account_id,
                CASE WHEN TG_OP = 'INSERT' THEN NEW.created_at ELSE now() END)
        ON CONFLICT (connection_id) DO NOTHING;
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS connections_live_cursor ON connections;
CREATE TRIGGER connections_live_cursor AFTER INSERT OR UPDATE OF settings ON connections
    FOR EACH ROW EXECUTE FUNCTION live_cursor_for_api_connection();

-- A changed connection with a live cursor wakes the delivery replicas.
CREATE OR REPLACE FUNCTION live_connection_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'api' OR NEW.settings ? 'mode' THEN
        PERFORM pg_notify('live_wakeup', NEW.id::text);
    END IF;
    RETURN NEW;
END
$$;

-- The per-referral outcomes of a delivery sent as records (a vendor's batch upsert), like
-- delivery_recipients for email: one row per referral that was not simply accepted —
-- rejected for good, or left to the delivery's next attempt ('retry'). Accepted referrals
-- have no row (a delivery's rows_sent counts them).
CREATE TABLE delivery_items (
    delivery_id uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('rejected', 'retry')),
    attempt     integer NOT NULL,
    detail      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, seq)
);

-- Concurrency slots per vendor API key, across every delivery replica (Mailchimp allows
-- 10 simultaneous connections per key; two connections may share a key; live loops and
-- scheduled batches share them). Keyed by a digest of the key, never the key itself. A
-- replica holds a slot while `lease_until` is in the future and renews it; a replica that
-- dies stops renewing and its slots lapse.
CREATE TABLE vendor_key_slots (
    key_digest  text NOT NULL,
    slot        integer NOT NULL,
    holder      text,
    lease_until timestamptz,
    PRIMARY KEY (key_digest, slot)
);

-- Real-time API delivery: each API connection's cursor and owner, the referrals that wait
-- for a retry (or were dead-lettered, rejected, or queued for replay), and every attempt.

ALTER TABLE connections DROP CONSTRAINT IF EXISTS connections_kind_check;
ALTER TABLE connections ADD CONSTRAINT connections_kind_check
    CHECK (kind IN ('sftp', 'ftps', 'email', 'api'));

-- One row per API connection, made with it (trigger below). The connection receives the
-- referrals received from `starts_at` on (its creation): the live loop places the cursor
-- just below the first of them when it first runs (delivered_seq NULL until then).
CREATE TABLE live_cursors (
    connection_id   uuid PRIMARY KEY REFERENCES connections (id) ON DELETE CASCADE,
    account_id      uuid NOT NULL,
    -- Every referral of the connection's scope with seq <= delivered_seq has an outcome
    -- (accepted, rejected, filtered out) or waits in live_messages. Moves forward only.
    delivered_seq   bigint,
    starts_at       timestamptz NOT NULL DEFAULT now(),
    -- The replica running the connection's live loop, while lease_until is in the future.
    owner           text,
    lease_until     timestamptz,
    -- Set when the endpoint was disabled (failing continuously, a 410, or by a person).
    disabled_at     timestamptz,
    disabled_reason text,
    -- The first failure since the last success (NULL while the endpoint works).
    failing_since   timestamptz,
    last_success_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX live_cursors_lease_idx ON live_cursors (lease_until);

CREATE FUNCTION live_cursor_for_api_connection() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'api' THEN
        INSERT INTO live_cursors (connection_id, account_id, starts_at)
        VALUES (NEW.id, NEW.account_id, NEW.created_at)
        ON CONFLICT (connection_id) DO NOTHING;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER connections_live_cursor AFTER INSERT ON connections
    FOR EACH ROW EXECUTE FUNCTION live_cursor_for_api_connection();

-- Referrals of one connection that are not simply done: waiting for a retry ('retrying'),
-- asked for again ('replay'), exhausted ('dead': the dead letters) or refused by the
-- endpoint ('rejected'). A referral accepted on its first attempt never has a row.
CREATE TABLE live_messages (
    connection_id   uuid NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    account_id      uuid NOT NULL,
    state           text NOT NULL CHECK (state IN ('retrying', 'replay', 'dead', 'rejected')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    first_failed_at timestamptz,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    PRIMARY KEY (connection_id, seq)
);
CREATE INDEX live_messages_due_idx ON live_messages (connection_id, next_attempt_at)
    WHERE state IN ('retrying', 'replay');
CREATE INDEX live_messages_failed_idx ON live_messages (connection_id, last_attempt_at)
    WHERE state IN ('dead', 'rejected');

-- Every attempt, written in batches; partitioned by day so retention drops whole days
-- (after counting them into live_attempt_days). The default partition catches rows whose
-- day has no partition yet; maintenance creates days ahead.
CREATE TABLE live_attempts (
    attempted_at  timestamptz NOT NULL,
    connection_id uuid NOT NULL,
    account_id    uuid NOT NULL,
    seq           bigint NOT NULL,
    attempt       integer NOT NULL,
    status        integer,          -- the HTTP status; NULL when nothing answered
    latency_ms    real NOT NULL,
    outcome       text NOT NULL,    -- accepted, rejected, retry, disable, dead
    rule          text NOT NULL,    -- which rule decided
    response_head text,             -- the answer's first KB (as text)
    error         text
) PARTITION BY RANGE (attempted_at);
CREATE TABLE live_attempts_default PARTITION OF live_attempts DEFAULT;
CREATE INDEX live_attempts_connection_idx ON live_attempts (connection_id, attempted_at);
CREATE INDEX live_attempts_seq_idx ON live_attempts (connection_id, seq);

-- Attempts older than the retention, as daily counts.
CREATE TABLE live_attempt_days (
    connection_id uuid NOT NULL,
    day           date NOT NULL,
    outcome       text NOT NULL,
    attempts      bigint NOT NULL,
    PRIMARY KEY (connection_id, day, outcome)
);

-- An attention event may concern a connection (an endpoint disabled) rather than a task.
ALTER TABLE attention_events
    ADD COLUMN connection_id uuid REFERENCES connections (id) ON DELETE CASCADE;
CREATE INDEX attention_events_connection_idx ON attention_events (connection_id)
    WHERE connection_id IS NOT NULL;

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

-- Keeps live_attempts bounded: a partition per UTC day from today to `ahead` days on
-- (rows the default partition holds for such a day move in first), and every day older
-- than `retention` days counted into live_attempt_days, then dropped. Returns the number
-- of days dropped. Callers serialise it (an advisory lock); it is idempotent.
CREATE FUNCTION live_attempts_maintain(retention integer, ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    today   date := (now() AT TIME ZONE 'UTC')::date;
    cutoff  date := today - retention;
    d       date;
    part    text;
    dropped integer := 0;
BEGIN
    FOR i IN 0..ahead LOOP
        d := today + i;
        part := 'live_attempts_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE live_attempts INCLUDING DEFAULTS)', part);
            EXECUTE format(
                'WITH moved AS (DELETE FROM live_attempts_default WHERE attempted_at >= %L '
                'AND attempted_at < %L RETURNING *) INSERT INTO %I SELECT * FROM moved',
                d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC', part);
            EXECUTE format('ALTER TABLE live_attempts ATTACH PARTITION %I FOR VALUES '
                           'FROM (%L) TO (%L)', part, d::timestamp AT TIME ZONE 'UTC',
                           (d + 1)::timestamp AT TIME ZONE 'UTC');
        END IF;
    END LOOP;
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'live_attempts'::regclass
           AND c.relname ~ '^live_attempts_[0-9]{8}$'
           AND to_date(substr(c.relname, 15), 'YYYYMMDD') < cutoff
    LOOP
        EXECUTE format(
            'INSERT INTO live_attempt_days (connection_id, day, outcome, attempts) '
            'SELECT connection_id, (attempted_at AT TIME ZONE ''UTC'')::date, outcome, count(*) '
            'FROM %I GROUP BY 1, 2, 3 ON CONFLICT (connection_id, day, outcome) DO UPDATE '
            'SET attempts = live_attempt_days.attempts + EXCLUDED.attempts', part);
        EXECUTE format('DROP TABLE %I', part);
        dropped := dropped + 1;
    END LOOP;
    WITH old AS (
        DELETE FROM live_attempts_default
         WHERE attempted_at < cutoff::timestamp AT TIME ZONE 'UTC'
        RETURNING connection_id, (attempted_at AT TIME ZONE 'UTC')::date AS on_day, outcome
    )
    INSERT INTO live_attempt_days AS t (connection_id, day, outcome, attempts)
    SELECT o.connection_id, o.on_day, o.outcome, count(*) FROM old o GROUP BY 1, 2, 3
    ON CONFLICT ON CONSTRAINT live_attempt_days_pkey DO UPDATE
       SET attempts = t.attempts + EXCLUDED.attempts;
    RETURN dropped;
END
$$;

-- A changed API connection wakes the delivery replicas (the owner restarts its loop with
-- the new settings at once, instead of at its next lease renewal).
CREATE FUNCTION live_connection_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'api' THEN
        PERFORM pg_notify('live_wakeup', NEW.id::text);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER connections_live_changed AFTER UPDATE ON connections
    FOR EACH ROW EXECUTE FUNCTION live_connection_changed();

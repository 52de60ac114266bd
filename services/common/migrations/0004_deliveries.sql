-- Scheduled delivery: connections (where), tasks (what and when), deliveries (one run of a
-- task over a fixed range), their attempts, and the events that tell an account to act.

CREATE TABLE connections (
    id          uuid PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind        text NOT NULL CHECK (kind IN ('sftp')),
    -- Everything but the secrets, as the connection API shows it.
    settings    jsonb NOT NULL,
    -- {"password": "<key id>:<sealed>", ...}: sealed by services/common/secrets.py, bound
    -- to "connection:<id>:<name>"; never returned by any API.
    secrets     jsonb NOT NULL DEFAULT '{}',
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT connections_name_key UNIQUE (account_id, name)
);

CREATE TABLE tasks (
    id             uuid PRIMARY KEY,
    account_id     uuid NOT NULL REFERENCES accounts (id),
    connection_id  uuid NOT NULL REFERENCES connections (id),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- NULL: every campaign of the account, including campaigns created later.
    campaign_ids   uuid[],
    layout_id      uuid REFERENCES layouts (id),  -- NULL: the account's default layout
    format         jsonb,                         -- NULL: the layout's own format
    schedule       jsonb NOT NULL,                -- {"cron": "..."} or {"every_s": n}
    time_zone      text NOT NULL,
    enabled        boolean NOT NULL DEFAULT true,
    send_empty     boolean NOT NULL DEFAULT false,
    -- The cursor: the end of the last successful delivery. Moves only on success.
    delivered_seq  bigint NOT NULL,
    next_run_at    timestamptz NOT NULL,
    -- Set when a person must act (a permanent failure, a dead delivery); cleared by a fix.
    attention      text,
    attention_at   timestamptz,
    version        bigint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasks_name_key UNIQUE (account_id, name)
);
CREATE INDEX tasks_due_idx ON tasks (next_run_at) WHERE enabled AND attention IS NULL;
CREATE INDEX tasks_connection_idx ON tasks (connection_id);
CREATE INDEX tasks_layout_idx ON tasks (layout_id);

CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    task_id         uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    account_id      uuid NOT NULL,
    -- 'scheduled' moves the task's cursor; 'resend' and 'redeliver' never do.
    purpose         text NOT NULL CHECK (purpose IN ('scheduled', 'resend', 'redeliver')),
    after_seq       bigint NOT NULL,
    through_seq     bigint NOT NULL CHECK (through_seq >= after_seq),
    state           text NOT NULL DEFAULT 'issued'
                    CHECK (state IN ('issued', 'running', 'retrying', 'succeeded', 'dead')),
    -- What it renders (the layout and its custom fields, as the engine's JSON), fixed by
    -- the first attempt: every retry and resend renders the same bytes.
    layout          jsonb,
    -- A resend: the delivery whose range, layout and file names it repeats.
    resend_of       uuid REFERENCES deliveries (id) ON DELETE SET NULL,
    -- A redelivery: only the referrals whose frame_field ('received_at' or 'opted_in_at')
    -- is in [frame_from, frame_to), within the range (through_seq fixed when requested).
    frame_field     text CHECK (frame_field IN ('received_at', 'opted_in_at')),
    frame_from      timestamptz,
    frame_to        timestamptz,
    reserved_at     timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    lease_until     timestamptz,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    rows_sent       bigint,
    bytes_sent      bigint,
    files           jsonb,  -- [{"path", "rows", "bytes", "sha256"}]
    error           text,
    diagnosis       text,
    finished_at     timestamptz,
    CHECK ((purpose = 'redeliver') = (frame_field IS NOT NULL)),
    CHECK (frame_field IS NULL OR frame_from < frame_to)
);
-- A task has at most one open scheduled delivery.
CREATE UNIQUE INDEX deliveries_one_open_idx ON deliveries (task_id)
    WHERE purpose = 'scheduled' AND state IN ('issued', 'running', 'retrying');
CREATE INDEX deliveries_task_idx ON deliveries (task_id, reserved_at);
CREATE INDEX deliveries_pending_idx ON deliveries (next_attempt_at)
    WHERE state IN ('issued', 'running', 'retrying');

CREATE TABLE delivery_attempts (
    delivery_id  uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    outcome      text NOT NULL CHECK (outcome IN ('succeeded', 'retrying', 'dead')),
    error        text,
    diagnosis    text,
    PRIMARY KEY (delivery_id, attempt)
);

-- What an account must be told about: listed by the API until resolved.
CREATE TABLE attention_events (
    id          uuid PRIMARY KEY,
    account_id  uuid NOT NULL,
    task_id     uuid REFERENCES tasks (id) ON DELETE CASCADE,
    delivery_id uuid REFERENCES deliveries (id) ON DELETE SET NULL,
    diagnosis   text NOT NULL,
    message     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE INDEX attention_events_open_idx ON attention_events (account_id, created_at)
    WHERE resolved_at IS NULL;

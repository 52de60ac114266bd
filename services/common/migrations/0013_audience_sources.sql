-- Custom audiences (part 2: sources and refresh). An audience is filled by an upload, by
-- the Zapier action, or pulled on a schedule from a source: a folder on one of the
-- account's SFTP connections, or a Mailchimp audience. A pull replaces the audience with
-- what the source holds now (removals are reflected), all or nothing.
ALTER TABLE audiences DROP CONSTRAINT audiences_source_check;
ALTER TABLE audiences ADD CONSTRAINT audiences_source_check
    CHECK (source IN ('upload', 'zapier', 'sftp_folder', 'mailchimp'));

-- One row per pulled audience: where it pulls from, when, and what the last pull did.
CREATE TABLE audience_sources (
    audience_id       uuid PRIMARY KEY REFERENCES audiences (id) ON DELETE CASCADE,
    account_id        uuid NOT NULL REFERENCES accounts (id),
    kind              text NOT NULL CHECK (kind IN ('sftp_folder', 'mailchimp')),
    -- A deleted connection leaves the source without one: its next pull says so.
    connection_id     uuid REFERENCES connections (id) ON DELETE SET NULL,
    settings          jsonb NOT NULL DEFAULT '{}',
    interval_s        integer NOT NULL CHECK (interval_s >= 900),
    next_due_at       timestamptz NOT NULL,
    -- The replica pulling now, until when (a crashed one's lease lapses).
    lease_token       uuid,
    lease_until       timestamptz,
    last_started_at   timestamptz,
    last_finished_at  timestamptz,
    -- {"ok": bool, "counts": {...}, "files": [...], "error": str, "diagnosis": str}
    last_outcome      jsonb,
    failures          integer NOT NULL DEFAULT 0
);
CREATE INDEX audience_sources_due_idx ON audience_sources (next_due_at);

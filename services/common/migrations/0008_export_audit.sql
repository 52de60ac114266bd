-- The export API (issue 13): who exported or downloaded what, readable by the account;
-- and the index that reads one account's referrals in seq order.
-- A row is written before the first byte is sent and finished when the stream ends, so
-- an export that broke off is still on record (outcome 'aborted', with what it had sent).
CREATE TABLE export_audit (
    id             uuid PRIMARY KEY,
    account_id     uuid NOT NULL REFERENCES accounts (id),
    -- The account token (or operator credential) that asked; NULL for a signed link.
    credential_id  uuid,
    action         text NOT NULL CHECK (action IN ('export', 'redownload', 'link_download')),
    -- What was asked for: the parameters as the API read them (never a secret).
    filters        jsonb NOT NULL DEFAULT '{}',
    request_id     text NOT NULL DEFAULT '',
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    outcome        text NOT NULL DEFAULT 'streaming'
                   CHECK (outcome IN ('streaming', 'completed', 'aborted', 'failed')),
    rows           bigint,
    bytes          bigint
);
CREATE INDEX export_audit_account_idx ON export_audit (account_id, started_at DESC, id DESC);

-- One account's referrals in seq order (deliveries' ranges, exports, browsing): without
-- it, a seq range is scanned for every account's rows and filtered.
CREATE INDEX referrals_account_seq_idx ON referrals (account_id, seq);

-- An account's delivery history, newest first (the export API's /v1/deliveries).
CREATE INDEX deliveries_account_reserved_idx ON deliveries (account_id, reserved_at DESC, id DESC);

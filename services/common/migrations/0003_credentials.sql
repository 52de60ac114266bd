-- Credentials: account tokens and service credentials, stored only as secret hashes.

CREATE TABLE credentials (
    id                 uuid PRIMARY KEY,
    kind               text NOT NULL CHECK (kind IN ('account', 'service')),
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_sha256      bytea NOT NULL CHECK (length(secret_sha256) = 32),
    account_id         uuid REFERENCES accounts (id),
    scopes             text[] NOT NULL DEFAULT '{}',
    roles              text[] NOT NULL DEFAULT '{}',
    -- INGEST role only: the accounts it may ingest for; NULL means every account.
    ingest_account_ids uuid[],
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz,
    revoked_at         timestamptz,
    CHECK ((kind = 'account') = (account_id IS NOT NULL)),
    CHECK (kind = 'service' OR (cardinality(roles) = 0 AND cardinality(scopes) > 0)),
    CHECK (kind = 'account' OR (cardinality(scopes) = 0 AND cardinality(roles) > 0))
);
CREATE INDEX credentials_account_idx ON credentials (account_id, created_at, id);
CREATE INDEX credentials_created_idx ON credentials (created_at, id);

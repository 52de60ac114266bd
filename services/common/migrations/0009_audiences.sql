-- Custom audiences (part 1: storage and uploads): an account's own customer lists, to
-- include or exclude referrals later. Kept only as hashes of the normalised email
-- (trimmed, lower-cased); a plain email is hashed on arrival and never stored.
CREATE TABLE audiences (
    id              uuid PRIMARY KEY,
    account_id      uuid NOT NULL REFERENCES accounts (id),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind            text NOT NULL CHECK (kind IN ('include', 'exclude')),
    source          text NOT NULL DEFAULT 'upload' CHECK (source IN ('upload')),
    -- People: members of the primary kind (sha256 when the audience has any, else md5).
    member_count    bigint NOT NULL DEFAULT 0,
    sha256_count    bigint NOT NULL DEFAULT 0,
    md5_count       bigint NOT NULL DEFAULT 0,
    -- 'too_small': an include audience below the minimum (1,000 people); using it is refused.
    state           text NOT NULL DEFAULT 'too_small' CHECK (state IN ('ready', 'too_small')),
    last_import_at  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);
CREATE INDEX audiences_account_created_idx ON audiences (account_id, created_at DESC, id DESC);

-- One row per hash: a plain email gives two (its SHA-256 and its MD5), a hashed one its own.
-- bytea, not hex text: half the size.
CREATE TABLE audience_members (
    audience_id  uuid NOT NULL REFERENCES audiences (id) ON DELETE CASCADE,
    hash_kind    text NOT NULL CHECK (hash_kind IN ('sha256', 'md5')),
    hash         bytea NOT NULL
                 CHECK (length(hash) = CASE hash_kind WHEN 'sha256' THEN 32 ELSE 16 END),
    PRIMARY KEY (audience_id, hash_kind, hash)
);

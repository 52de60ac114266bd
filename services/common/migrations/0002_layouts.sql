-- Custom fields and layouts, per account. Definitions are stored as the engine's JSON
-- (services/common/layouts/codec.py); the reference arrays let a delete find its users.

CREATE TABLE custom_fields (
    id          uuid PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id),
    name        text NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$'),
    description text NOT NULL DEFAULT '',
    definition  jsonb NOT NULL,
    -- Names of the other custom fields this one reads (source, templates, country field).
    depends_on  text[] NOT NULL DEFAULT '{}',
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT custom_fields_name_key UNIQUE (account_id, name)
);
CREATE INDEX custom_fields_depends_on_idx ON custom_fields USING gin (depends_on);

CREATE TABLE layouts (
    id            uuid PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts (id),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    definition    jsonb NOT NULL,
    -- Names of the custom fields the layout shows.
    custom_fields text[] NOT NULL DEFAULT '{}',
    is_default    boolean NOT NULL DEFAULT false,
    version       bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT layouts_name_key UNIQUE (account_id, name)
);
CREATE INDEX layouts_custom_fields_idx ON layouts USING gin (custom_fields);
-- At most one saved default per account; without one the built-in default applies.
CREATE UNIQUE INDEX layouts_one_default_idx ON layouts (account_id) WHERE is_default;

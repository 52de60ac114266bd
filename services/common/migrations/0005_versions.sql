-- Every saved state of a layout and of a custom field, kept for good (append-only): an
-- update makes a new version, and a delivery names the versions it rendered. Written by
-- triggers, so that no code path that saves a definition can forget its version.

CREATE TABLE layout_versions (
    layout_id   uuid NOT NULL,
    version     bigint NOT NULL,
    account_id  uuid NOT NULL,
    name        text NOT NULL,
    definition  jsonb NOT NULL,
    saved_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (layout_id, version)
);

CREATE TABLE custom_field_versions (
    field_id    uuid NOT NULL,
    version     bigint NOT NULL,
    account_id  uuid NOT NULL,
    name        text NOT NULL,
    description text NOT NULL,
    definition  jsonb NOT NULL,
    saved_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (field_id, version)
);

CREATE FUNCTION keep_layout_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO layout_versions (layout_id, version, account_id, name, definition)
    VALUES (NEW.id, NEW.version, NEW.account_id, NEW.name, NEW.definition)
    ON CONFLICT (layout_id, version) DO NOTHING;
    RETURN NEW;
END
$$;

CREATE FUNCTION keep_custom_field_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO custom_field_versions (field_id, version, account_id, name, description, definition)
    VALUES (NEW.id, NEW.version, NEW.account_id, NEW.name, NEW.description, NEW.definition)
    ON CONFLICT (field_id, version) DO NOTHING;
    RETURN NEW;
END
$$;

CREATE TRIGGER layouts_keep_version AFTER INSERT OR UPDATE ON layouts
    FOR EACH ROW EXECUTE FUNCTION keep_layout_version();
CREATE TRIGGER custom_fields_keep_version AFTER INSERT OR UPDATE ON custom_fields
    FOR EACH ROW EXECUTE FUNCTION keep_custom_field_version();

INSERT INTO layout_versions (layout_id, version, account_id, name, definition, saved_at)
SELECT id, version, account_id, name, definition, updated_at FROM layouts;
INSERT INTO custom_field_versions
       (field_id, version, account_id, name, description, definition, saved_at)
SELECT id, version, account_id, name, description, definition, updated_at FROM custom_fields;

-- Every statement the layout service runs. Loaded by services/scheduler/layouts/store.py.

-- name: lock_definitions
-- Serialises definition writes of one account until the transaction ends.
SELECT pg_advisory_xact_lock(4242, hashtext($1::uuid::text));

-- name: get_account
SELECT id, time_zone, status = 'active' AS active FROM accounts WHERE id = $1;

-- name: all_custom_fields
SELECT * FROM custom_fields WHERE account_id = $1 ORDER BY name;

-- name: list_custom_fields
SELECT * FROM custom_fields
 WHERE account_id = $1 AND name > $2
 ORDER BY name
 LIMIT $3;

-- name: get_custom_field
SELECT * FROM custom_fields WHERE account_id = $1 AND id = $2;

-- name: insert_custom_field
INSERT INTO custom_fields (id, account_id, name, description, definition, depends_on)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO NOTHING
RETURNING *;

-- name: update_custom_field
UPDATE custom_fields
   SET description = $3, definition = $4, depends_on = $5,
       version = version + 1, updated_at = now()
 WHERE account_id = $1 AND id = $2
RETURNING *;

-- name: delete_custom_field
DELETE FROM custom_fields WHERE account_id = $1 AND id = $2 RETURNING id;

-- name: custom_field_users
-- Layouts showing the field and custom fields reading it, by name.
SELECT (SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM layouts
         WHERE account_id = $1 AND $2 = ANY (custom_fields)) AS layouts,
       (SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM custom_fields
         WHERE account_id = $1 AND $2 = ANY (depends_on)) AS custom_fields;

-- name: layout_tasks
-- The tasks that deliver with the layout (it cannot be deleted while one does).
SELECT name FROM tasks WHERE account_id = $1 AND layout_id = $2 ORDER BY name LIMIT 20;

-- name: get_layout
SELECT * FROM layouts WHERE account_id = $1 AND id = $2;

-- name: default_layout
SELECT * FROM layouts WHERE account_id = $1 AND is_default;

-- name: list_layouts
SELECT * FROM layouts
 WHERE account_id = $1 AND name > $2
 ORDER BY name
 LIMIT $3;

-- name: layout_name_taken
SELECT EXISTS (SELECT 1 FROM layouts
                WHERE account_id = $1 AND name = $2 AND id IS DISTINCT FROM $3);

-- name: clear_default_layout
-- Makes room for a new default: at most one per account.
UPDATE layouts SET is_default = false, updated_at = now()
 WHERE account_id = $1 AND is_default AND id <> $2;

-- name: insert_layout
INSERT INTO layouts (id, account_id, name, definition, custom_fields, is_default)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO NOTHING
RETURNING *;

-- name: update_layout
UPDATE layouts
   SET name = $3, definition = $4, custom_fields = $5, is_default = $6,
       version = version + 1, updated_at = now()
 WHERE account_id = $1 AND id = $2
RETURNING *;

-- name: delete_layout
DELETE FROM layouts WHERE account_id = $1 AND id = $2 RETURNING id;

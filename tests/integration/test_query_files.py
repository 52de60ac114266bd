"""Every named query in every services/**/sql/*.sql file prepares against the migrated schema
with the parameter and result types its caller relies on, so a migration or an edit that
changes what a query takes or answers breaks a test, not a deploy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.common.db import load_queries
from services.common.referral_shape import COLUMNS

pytestmark = pytest.mark.integration

SERVICES = Path(__file__).resolve().parents[2] / "services"
QUERY_FILES = sorted(SERVICES.glob("**/sql/*.sql"))
# Queries that set up per-connection state other queries of the same file need: the ingest
# and audience stores create their staging tables (temp tables) on each connection.
SETUP_QUERIES = ("create_referral_staging", "create_audience_staging")

# (file, query) -> (parameter types, "result:type" columns), as PostgreSQL reports them.
# A query missing here, or one whose types differ, fails below with both versions shown.
# The row readers' results follow the referral's shape: every column but seq as text for
# the range (NULL as ''), each column's own type for the latest rows (nullable ones as
# text, NULL as '').
_ROWS_IN_RANGE = " ".join(f"{c.name}:{'int8' if c.name == 'seq' else 'text'}" for c in COLUMNS)
_LATEST_ROWS = " ".join(f"{c.name}:{'text' if c.nullable else c.sql_type}" for c in COLUMNS)
# The live path reads every column as text, in the shape's order.
_ALL_TEXT = " ".join(f"{c.name}:text" for c in COLUMNS)
_RECIPIENT = (
    "id:uuid connection_id:uuid account_id:uuid address:text state:text "
    "created_at:timestamptz changed_at:timestamptz"
)
# The export API's referral documents: every column as stored, the IP as text, the name.
_REFERRAL = " ".join(f"{c.name}:{c.sql_type}" for c in COLUMNS) + " ip_text:text campaign_name:text"
# A delivery row with its task's connection (the export API's delivery history).
_DELIVERY_ROW = (
    "id:uuid task_id:uuid account_id:uuid purpose:text after_seq:int8 "
    "through_seq:int8 state:text layout:jsonb resend_of:uuid frame_field:text "
    "frame_from:timestamptz frame_to:timestamptz reserved_at:timestamptz "
    "attempts:int4 lease_until:timestamptz next_attempt_at:timestamptz rows_sent:int8 "
    "bytes_sent:int8 files:jsonb error:text diagnosis:text finished_at:timestamptz "
    "suppressed:int8 connection_id:uuid"
)
# A Zapier REST-hook subscription row.
_SUBSCRIPTION = (
    "id:uuid account_id:uuid connection_id:uuid target_url:text event:text "
    "campaign_ids:uuid[] credential_id:uuid state:text created_at:timestamptz "
    "removed_at:timestamptz removed_reason:text"
)
# An audience row (custom audiences of the export API).
_AUDIENCE = (
    "id:uuid account_id:uuid name:text kind:text source:text member_count:int8 "
    "sha256_count:int8 md5_count:int8 state:text last_import_at:timestamptz "
    "created_at:timestamptz updated_at:timestamptz md5_only:bool"
)
# A pulled audience's source, its schedule and its last pull.
_AUDIENCE_SOURCE = (
    "audience_id:uuid account_id:uuid kind:text connection_id:uuid settings:jsonb "
    "interval_s:int4 next_due_at:timestamptz lease_token:uuid lease_until:timestamptz "
    "last_started_at:timestamptz last_finished_at:timestamptz last_outcome:jsonb "
    "failures:int4"
)
SIGNATURES: dict[tuple[str, str], tuple[str, str]] = {
    ("common/sql/referral_rows.sql", "referral_rows_in_range"): (
        "uuid int8 int8 uuid[] text[] timestamptz timestamptz text uuid",
        _ROWS_IN_RANGE,
    ),
    ("common/sql/referral_rows.sql", "latest_referral_rows"): ("uuid int8", _LATEST_ROWS),
    # common/sql/referral_rows.sql
    ("common/sql/referral_rows.sql", "quick_start"): ("", "set_config:text set_config:text"),
    ("common/sql/referral_rows.sql", "audience_session"): (
        "",
        "set_config:text set_config:text",
    ),
    ("common/sql/referral_rows.sql", "render_session"): (
        "",
        "set_config:text set_config:text",
    ),
    ("common/sql/referral_rows.sql", "render_context"): (
        "uuid",
        "time_zone:text campaign_names:jsonb",
    ),
    # export/sql/audit.sql
    ("export/sql/audit.sql", "begin_entry"): ("uuid uuid uuid text jsonb text", ""),
    ("export/sql/audit.sql", "finish_entry"): ("uuid text int8 int8", ""),
    ("export/sql/audit.sql", "page_entries"): (
        "uuid text timestamptz timestamptz timestamptz uuid int8",
        "id:uuid account_id:uuid credential_id:uuid action:text filters:jsonb request_id:text "
        "started_at:timestamptz finished_at:timestamptz outcome:text rows:int8 bytes:int8",
    ),
    # export/sql/referrals.sql
    ("export/sql/referrals.sql", "pin"): ("", "watermark:int8 lsn:text"),
    ("export/sql/referrals.sql", "replayed"): ("text", "coalesce:bool"),
    ("export/sql/referrals.sql", "page_referrals"): (
        "uuid int8 int8 uuid[] text timestamptz timestamptz text int8",
        _REFERRAL,
    ),
    ("export/sql/referrals.sql", "get_referral"): ("uuid int8", _REFERRAL),
    ("export/sql/referrals.sql", "campaigns_of"): ("uuid uuid[]", "id:uuid"),
    # export/sql/deliveries.sql
    ("export/sql/deliveries.sql", "page_deliveries"): (
        "uuid uuid uuid text text timestamptz timestamptz timestamptz uuid int8",
        _DELIVERY_ROW,
    ),
    ("export/sql/deliveries.sql", "get_delivery"): ("uuid uuid", _DELIVERY_ROW),
    ("export/sql/deliveries.sql", "delivery_attempts"): (
        "uuid",
        "attempt:int4 started_at:timestamptz finished_at:timestamptz outcome:text error:text "
        "diagnosis:text",
    ),
    # export/sql/queries.sql
    ("export/sql/queries.sql", "ping"): (
        "",
        "?column?:int4",
    ),
    ("export/sql/queries.sql", "schema_version"): (
        "",
        "coalesce:int4",
    ),
    ("export/sql/queries.sql", "delivery_account"): ("uuid", "account_id:uuid"),
    ("export/sql/queries.sql", "confirm_recipient"): (
        "uuid",
        "address:text state:text changed:bool",
    ),
    # delivery/sql/email.sql
    ("delivery/sql/email.sql", "recipients"): ("uuid", "id:uuid address:text done:bool"),
    ("delivery/sql/email.sql", "record"): ("uuid uuid text text text text", ""),
    ("delivery/sql/email.sql", "attention"): ("uuid uuid text", ""),
    # scheduler/recipients/sql/recipients.sql
    ("scheduler/recipients/sql/recipients.sql", "email_connection"): (
        "uuid uuid",
        "id:uuid kind:text name:text account_name:text",
    ),
    ("scheduler/recipients/sql/recipients.sql", "find"): ("uuid text", _RECIPIENT),
    ("scheduler/recipients/sql/recipients.sql", "get"): ("uuid uuid", _RECIPIENT),
    ("scheduler/recipients/sql/recipients.sql", "insert"): ("uuid uuid uuid text", _RECIPIENT),
    ("scheduler/recipients/sql/recipients.sql", "set_state"): ("uuid text", _RECIPIENT),
    ("scheduler/recipients/sql/recipients.sql", "list"): ("uuid", _RECIPIENT),
    ("scheduler/recipients/sql/recipients.sql", "record_event"): ("uuid text text text", ""),
    ("scheduler/recipients/sql/recipients.sql", "history"): (
        "uuid[]",
        "recipient_id:uuid state:text how:text actor:text at:timestamptz",
    ),
    # ingest/sql/queries.sql
    ("ingest/sql/queries.sql", "insert_referrals"): (
        "text",
        "seqs:int8[] accounts:text[] partners:text[]",
    ),
    ("ingest/sql/queries.sql", "draw_referral_seqs"): (
        "uuid[] int4",
        "active:text[] seqs:int8[]",
    ),
    ("ingest/sql/queries.sql", "notify_referrals_ingested"): (
        "int8",
        "pg_notify:void",
    ),
    ("ingest/sql/queries.sql", "create_referral_staging"): (
        "",
        "",
    ),
    ("ingest/sql/queries.sql", "insert_staged_referrals"): (
        "uuid[]",
        "seqs:int8[] accounts:text[] partners:text[]",
    ),
    ("ingest/sql/queries.sql", "existing_referrals"): (
        "uuid[] text[]",
        "seq:int8 account_id:uuid partner_referral_id:text",
    ),
    ("ingest/sql/queries.sql", "campaign_states"): (
        "uuid[]",
        "id:uuid account_id:uuid status:text account_status:text",
    ),
    ("ingest/sql/queries.sql", "safe_watermark"): (
        "",
        "safe_referral_watermark:int8",
    ),
    ("ingest/sql/queries.sql", "referral_seqs_in_range"): (
        "int8 int8",
        "seq:int8",
    ),
    ("ingest/sql/queries.sql", "insert_account"): (
        "uuid text text",
        "id:uuid name:text time_zone:text status:text created_at:timestamptz "
        "archived_at:timestamptz",
    ),
    ("ingest/sql/queries.sql", "get_account"): (
        "uuid",
        "id:uuid name:text time_zone:text status:text created_at:timestamptz "
        "archived_at:timestamptz",
    ),
    ("ingest/sql/queries.sql", "list_accounts"): (
        "bool timestamptz uuid int8",
        "id:uuid name:text time_zone:text status:text created_at:timestamptz "
        "archived_at:timestamptz",
    ),
    ("ingest/sql/queries.sql", "archive_account"): (
        "uuid",
        "id:uuid name:text time_zone:text status:text created_at:timestamptz "
        "archived_at:timestamptz",
    ),
    ("ingest/sql/queries.sql", "insert_campaign"): (
        "uuid uuid text",
        "id:uuid account_id:uuid name:text status:text created_at:timestamptz "
        "archived_at:timestamptz",
    ),
    ("ingest/sql/queries.sql", "get_campaign"): (
        "uuid uuid",
        "id:uuid account_id:uuid name:text status:text created_at:timestamptz "
        "archived_at:timestamptz",
    ),
    ("ingest/sql/queries.sql", "list_campaigns"): (
        "uuid bool timestamptz uuid int8",
        "id:uuid account_id:uuid name:text status:text created_at:timestamptz "
        "archived_at:timestamptz",
    ),
    ("ingest/sql/queries.sql", "archive_campaign"): (
        "uuid uuid",
        "id:uuid account_id:uuid name:text status:text created_at:timestamptz "
        "archived_at:timestamptz",
    ),
    # scheduler/sql/layouts.sql
    ("scheduler/sql/layouts.sql", "lock_definitions"): (
        "uuid",
        "pg_advisory_xact_lock:void",
    ),
    ("scheduler/sql/layouts.sql", "get_account"): (
        "uuid",
        "id:uuid time_zone:text active:bool",
    ),
    ("scheduler/sql/layouts.sql", "all_custom_fields"): (
        "uuid",
        "id:uuid account_id:uuid name:text description:text definition:jsonb "
        "depends_on:text[] version:int8 created_at:timestamptz updated_at:timestamptz",
    ),
    ("scheduler/sql/layouts.sql", "list_custom_fields"): (
        "uuid text int8",
        "id:uuid account_id:uuid name:text description:text definition:jsonb "
        "depends_on:text[] version:int8 created_at:timestamptz updated_at:timestamptz",
    ),
    ("scheduler/sql/layouts.sql", "get_custom_field"): (
        "uuid uuid",
        "id:uuid account_id:uuid name:text description:text definition:jsonb "
        "depends_on:text[] version:int8 created_at:timestamptz updated_at:timestamptz",
    ),
    ("scheduler/sql/layouts.sql", "insert_custom_field"): (
        "uuid uuid text text jsonb text[]",
        "id:uuid account_id:uuid name:text description:text definition:jsonb "
        "depends_on:text[] version:int8 created_at:timestamptz updated_at:timestamptz",
    ),
    ("scheduler/sql/layouts.sql", "update_custom_field"): (
        "uuid uuid text jsonb text[]",
        "id:uuid account_id:uuid name:text description:text definition:jsonb "
        "depends_on:text[] version:int8 created_at:timestamptz updated_at:timestamptz",
    ),
    ("scheduler/sql/layouts.sql", "delete_custom_field"): (
        "uuid uuid",
        "id:uuid",
    ),
    ("scheduler/sql/layouts.sql", "custom_field_users"): (
        "uuid text",
        "layouts:text[] custom_fields:text[]",
    ),
    ("scheduler/sql/layouts.sql", "get_layout"): (
        "uuid uuid",
        "id:uuid account_id:uuid name:text definition:jsonb custom_fields:text[] "
        "is_default:bool version:int8 created_at:timestamptz updated_at:timestamptz",
    ),
    ("scheduler/sql/layouts.sql", "default_layout"): (
        "uuid",
        "id:uuid account_id:uuid name:text definition:jsonb custom_fields:text[] "
        "is_default:bool version:int8 created_at:timestamptz updated_at:timestamptz",
    ),
    ("scheduler/sql/layouts.sql", "list_layouts"): (
        "uuid text int8",
        "id:uuid account_id:uuid name:text definition:jsonb custom_fields:text[] "
        "is_default:bool version:int8 created_at:timestamptz updated_at:timestamptz",
    ),
    ("scheduler/sql/layouts.sql", "layout_name_taken"): (
        "uuid text uuid",
        "exists:bool",
    ),
    ("scheduler/sql/layouts.sql", "clear_default_layout"): (
        "uuid uuid",
        "",
    ),
    ("scheduler/sql/layouts.sql", "insert_layout"): (
        "uuid uuid text jsonb text[] bool",
        "id:uuid account_id:uuid name:text definition:jsonb custom_fields:text[] "
        "is_default:bool version:int8 created_at:timestamptz updated_at:timestamptz",
    ),
    ("scheduler/sql/layouts.sql", "update_layout"): (
        "uuid uuid text jsonb text[] bool",
        "id:uuid account_id:uuid name:text definition:jsonb custom_fields:text[] "
        "is_default:bool version:int8 created_at:timestamptz updated_at:timestamptz",
    ),
    ("scheduler/sql/layouts.sql", "layout_tasks"): ("uuid uuid", "name:text"),
    ("scheduler/sql/layouts.sql", "delete_layout"): (
        "uuid uuid",
        "id:uuid",
    ),
    # The watermark monitor's.
    ("common/sql/watermark.sql", "watermark_status"): ("", "safe:int8 drawn:int8 waited_s:float8"),
    ("common/sql/watermark.sql", "watermark_blockers"): (
        "",
        "pid:int4 datname:name usename:name application_name:text xid:text age_s:float8 state:text",
    ),
    ("common/sql/watermark.sql", "prepared_blockers"): (
        "",
        "gid:text database:name owner:text xid:text age_s:float8",
    ),
    # The credential, connection, task and delivery queries.
    ("delivery/sql/deliveries.sql", "original_files"): ("uuid", "files:jsonb"),
    ("delivery/sql/deliveries.sql", "items_reset"): ("uuid", ""),
    ("delivery/sql/deliveries.sql", "items_record"): ("uuid int4 int8[] text[] text[]", ""),
    ("delivery/sql/deliveries.sql", "items_of"): ("uuid", "seq:int8 outcome:text detail:text"),
    ("scheduler/tasks/sql/tasks.sql", "task_encrypts"): ("uuid", "?column?:bool"),
    ("common/sql/credentials.sql", "lookup"): (
        "uuid",
        "id:uuid kind:text name:text secret_sha256:bytea account_id:uuid scopes:text[] "
        "roles:text[] ingest_account_ids:uuid[] created_at:timestamptz expires_at:timestamptz "
        "revoked_at:timestamptz account_archived:bool",
    ),
    ("common/sql/credentials.sql", "insert"): (
        "uuid text text bytea uuid text[] text[] uuid[] timestamptz",
        "id:uuid kind:text name:text secret_sha256:bytea account_id:uuid scopes:text[] "
        "roles:text[] ingest_account_ids:uuid[] created_at:timestamptz expires_at:timestamptz "
        "revoked_at:timestamptz account_archived:bool",
    ),
    ("common/sql/credentials.sql", "list"): (
        "uuid bool int8 timestamptz uuid",
        "id:uuid kind:text name:text secret_sha256:bytea account_id:uuid scopes:text[] "
        "roles:text[] ingest_account_ids:uuid[] created_at:timestamptz expires_at:timestamptz "
        "revoked_at:timestamptz account_archived:bool",
    ),
    ("common/sql/credentials.sql", "revoke"): (
        "uuid",
        "id:uuid kind:text name:text secret_sha256:bytea account_id:uuid scopes:text[] "
        "roles:text[] ingest_account_ids:uuid[] created_at:timestamptz expires_at:timestamptz "
        "revoked_at:timestamptz account_archived:bool",
    ),
    ("common/sql/credentials.sql", "account_exists"): (
        "uuid",
        "archived:bool",
    ),
    ("delivery/sql/deliveries.sql", "claim"): (
        "uuid float8",
        "id:uuid task_id:uuid account_id:uuid purpose:text after_seq:int8 through_seq:int8 "
        "state:text layout:jsonb resend_of:uuid frame_field:text frame_from:timestamptz "
        "frame_to:timestamptz reserved_at:timestamptz attempts:int4 lease_until:timestamptz "
        "next_attempt_at:timestamptz rows_sent:int8 bytes_sent:int8 files:jsonb error:text "
        "diagnosis:text finished_at:timestamptz suppressed:int8 claimed_at:timestamptz",
    ),
    ("delivery/sql/deliveries.sql", "described"): (
        "uuid",
        "id:uuid task_id:uuid account_id:uuid purpose:text after_seq:int8 through_seq:int8 "
        "state:text layout:jsonb resend_of:uuid frame_field:text frame_from:timestamptz "
        "frame_to:timestamptz reserved_at:timestamptz attempts:int4 lease_until:timestamptz "
        "next_attempt_at:timestamptz rows_sent:int8 bytes_sent:int8 files:jsonb error:text "
        "diagnosis:text finished_at:timestamptz suppressed:int8 claimed_at:timestamptz",
    ),
    ("delivery/sql/deliveries.sql", "state"): (
        "uuid",
        "state:text lease_until:timestamptz next_attempt_at:timestamptz after_seq:int8 "
        "through_seq:int8",
    ),
    ("delivery/sql/deliveries.sql", "heartbeat"): (
        "uuid int4 float8",
        "",
    ),
    ("delivery/sql/deliveries.sql", "context"): (
        "uuid",
        "task_name:text campaign_ids:uuid[] layout_id:uuid format:jsonb time_zone:text "
        "delivered_seq:int8 audience_ids:uuid[] connection_id:uuid settings:jsonb secrets:jsonb "
        "account_time_zone:text campaign_names:jsonb kind:text",
    ),
    ("delivery/sql/deliveries.sql", "layout_definitions"): (
        "uuid uuid",
        "layout:jsonb custom_fields:jsonb",
    ),
    ("delivery/sql/deliveries.sql", "keep_layout"): (
        "uuid jsonb",
        "layout:jsonb",
    ),
    ("delivery/sql/deliveries.sql", "suppressions_recorded"): ("uuid", "recorded:bool"),
    ("delivery/sql/deliveries.sql", "record_suppressions"): ("uuid int8[]", "delivery_id:uuid"),
    ("delivery/sql/deliveries.sql", "kept_layout"): (
        "uuid",
        "layout:jsonb",
    ),
    ("delivery/sql/deliveries.sql", "succeed"): (
        "uuid int4 int8 int8 jsonb",
        "task_id:uuid purpose:text after_seq:int8 through_seq:int8",
    ),
    ("delivery/sql/deliveries.sql", "advance_cursor"): (
        "uuid int8 int8",
        "",
    ),
    ("delivery/sql/deliveries.sql", "retry_later"): (
        "uuid int4 timestamptz text text",
        "",
    ),
    ("delivery/sql/deliveries.sql", "give_up"): (
        "uuid int4 text text",
        "task_id:uuid account_id:uuid purpose:text",
    ),
    ("delivery/sql/deliveries.sql", "needs_attention"): (
        "uuid text",
        "",
    ),
    ("delivery/sql/deliveries.sql", "attention_event"): (
        "uuid uuid uuid uuid text text",
        "",
    ),
    ("delivery/sql/deliveries.sql", "record_attempt"): (
        "uuid int4 timestamptz text text text",
        "",
    ),
    ("scheduler/connections/sql/connections.sql", "account_state"): (
        "uuid",
        "archived:bool",
    ),
    ("scheduler/connections/sql/connections.sql", "insert"): (
        "uuid uuid text jsonb jsonb text uuid[]",
        "id:uuid account_id:uuid name:text kind:text settings:jsonb secrets:jsonb version:int8 "
        "created_at:timestamptz updated_at:timestamptz audience_ids:uuid[]",
    ),
    ("scheduler/connections/sql/connections.sql", "get"): (
        "uuid uuid",
        "id:uuid account_id:uuid name:text kind:text settings:jsonb secrets:jsonb version:int8 "
        "created_at:timestamptz updated_at:timestamptz audience_ids:uuid[]",
    ),
    ("scheduler/connections/sql/connections.sql", "page"): (
        "uuid text int8",
        "id:uuid account_id:uuid name:text kind:text settings:jsonb secrets:jsonb version:int8 "
        "created_at:timestamptz updated_at:timestamptz audience_ids:uuid[]",
    ),
    ("scheduler/connections/sql/connections.sql", "update"): (
        "uuid uuid text jsonb jsonb text uuid[]",
        "id:uuid account_id:uuid name:text kind:text settings:jsonb secrets:jsonb version:int8 "
        "created_at:timestamptz updated_at:timestamptz audience_ids:uuid[]",
    ),
    ("scheduler/connections/sql/connections.sql", "delete"): (
        "uuid uuid",
        "",
    ),
    ("scheduler/connections/sql/connections.sql", "owning_subscription"): ("uuid", "id:uuid"),
    ("scheduler/connections/sql/connections.sql", "tasks_using"): (
        "uuid",
        "id:uuid name:text",
    ),
    ("scheduler/tasks/sql/tasks.sql", "safe_watermark"): (
        "",
        "safe_referral_watermark:int8",
    ),
    ("scheduler/tasks/sql/tasks.sql", "account_state"): (
        "uuid",
        "archived:bool time_zone:text",
    ),
    ("scheduler/tasks/sql/tasks.sql", "foreign_campaigns"): (
        "uuid uuid[]",
        "c:uuid",
    ),
    ("scheduler/tasks/sql/tasks.sql", "layout_exists"): (
        "uuid uuid",
        "exists:bool",
    ),
    ("scheduler/tasks/sql/tasks.sql", "connection_exists"): (
        "uuid uuid",
        "exists:bool",
    ),
    ("scheduler/tasks/sql/tasks.sql", "backfill_cursor"): (
        "uuid timestamptz int8",
        "coalesce:int8",
    ),
    ("scheduler/tasks/sql/tasks.sql", "insert_task"): (
        "uuid uuid uuid text uuid[] uuid jsonb jsonb text bool bool uuid[] int8 timestamptz",
        "id:uuid account_id:uuid connection_id:uuid name:text campaign_ids:uuid[] layout_id:uuid "
        "format:jsonb schedule:jsonb time_zone:text enabled:bool send_empty:bool "
        "delivered_seq:int8 next_run_at:timestamptz attention:text attention_at:timestamptz "
        "version:int8 created_at:timestamptz updated_at:timestamptz audience_ids:uuid[]",
    ),
    ("scheduler/tasks/sql/tasks.sql", "get_task"): (
        "uuid uuid",
        "id:uuid account_id:uuid connection_id:uuid name:text campaign_ids:uuid[] layout_id:uuid "
        "format:jsonb schedule:jsonb time_zone:text enabled:bool send_empty:bool "
        "delivered_seq:int8 next_run_at:timestamptz attention:text attention_at:timestamptz "
        "version:int8 created_at:timestamptz updated_at:timestamptz audience_ids:uuid[]",
    ),
    ("scheduler/tasks/sql/tasks.sql", "page_tasks"): (
        "uuid text int8",
        "id:uuid account_id:uuid connection_id:uuid name:text campaign_ids:uuid[] layout_id:uuid "
        "format:jsonb schedule:jsonb time_zone:text enabled:bool send_empty:bool "
        "delivered_seq:int8 next_run_at:timestamptz attention:text attention_at:timestamptz "
        "version:int8 created_at:timestamptz updated_at:timestamptz audience_ids:uuid[]",
    ),
    ("scheduler/tasks/sql/tasks.sql", "update_task"): (
        "uuid uuid uuid text uuid[] uuid jsonb jsonb text bool bool uuid[] timestamptz",
        "id:uuid account_id:uuid connection_id:uuid name:text campaign_ids:uuid[] layout_id:uuid "
        "format:jsonb schedule:jsonb time_zone:text enabled:bool send_empty:bool "
        "delivered_seq:int8 next_run_at:timestamptz attention:text attention_at:timestamptz "
        "version:int8 created_at:timestamptz updated_at:timestamptz audience_ids:uuid[]",
    ),
    ("scheduler/tasks/sql/tasks.sql", "delete_task"): (
        "uuid uuid",
        "",
    ),
    ("scheduler/tasks/sql/tasks.sql", "set_enabled"): (
        "uuid uuid bool",
        "id:uuid account_id:uuid connection_id:uuid name:text campaign_ids:uuid[] layout_id:uuid "
        "format:jsonb schedule:jsonb time_zone:text enabled:bool send_empty:bool "
        "delivered_seq:int8 next_run_at:timestamptz attention:text attention_at:timestamptz "
        "version:int8 created_at:timestamptz updated_at:timestamptz audience_ids:uuid[]",
    ),
    ("scheduler/tasks/sql/tasks.sql", "run_now"): (
        "uuid uuid",
        "id:uuid account_id:uuid connection_id:uuid name:text campaign_ids:uuid[] layout_id:uuid "
        "format:jsonb schedule:jsonb time_zone:text enabled:bool send_empty:bool "
        "delivered_seq:int8 next_run_at:timestamptz attention:text attention_at:timestamptz "
        "version:int8 created_at:timestamptz updated_at:timestamptz audience_ids:uuid[]",
    ),
    ("scheduler/tasks/sql/tasks.sql", "revive_dead"): (
        "uuid",
        "",
    ),
    ("scheduler/tasks/sql/tasks.sql", "resolve_attention"): (
        "uuid",
        "",
    ),
    ("scheduler/tasks/sql/tasks.sql", "open_delivery"): (
        "uuid",
        "exists:bool",
    ),
    ("scheduler/tasks/sql/tasks.sql", "due_tasks"): (
        "timestamptz int8",
        "id:uuid account_id:uuid connection_id:uuid name:text campaign_ids:uuid[] layout_id:uuid "
        "format:jsonb schedule:jsonb time_zone:text enabled:bool send_empty:bool "
        "delivered_seq:int8 next_run_at:timestamptz attention:text attention_at:timestamptz "
        "version:int8 created_at:timestamptz updated_at:timestamptz audience_ids:uuid[] "
        "has_open:bool",
    ),
    ("scheduler/tasks/sql/tasks.sql", "insert_delivery"): (
        "uuid uuid uuid text int8 int8 jsonb timestamptz uuid",
        "id:uuid task_id:uuid account_id:uuid purpose:text after_seq:int8 through_seq:int8 "
        "state:text layout:jsonb resend_of:uuid frame_field:text frame_from:timestamptz "
        "frame_to:timestamptz reserved_at:timestamptz attempts:int4 lease_until:timestamptz "
        "next_attempt_at:timestamptz rows_sent:int8 bytes_sent:int8 files:jsonb error:text "
        "diagnosis:text finished_at:timestamptz suppressed:int8",
    ),
    ("scheduler/tasks/sql/tasks.sql", "insert_redelivery"): (
        "uuid uuid uuid int8 text timestamptz timestamptz",
        "id:uuid task_id:uuid account_id:uuid purpose:text after_seq:int8 through_seq:int8 "
        "state:text layout:jsonb resend_of:uuid frame_field:text frame_from:timestamptz "
        "frame_to:timestamptz reserved_at:timestamptz attempts:int4 lease_until:timestamptz "
        "next_attempt_at:timestamptz rows_sent:int8 bytes_sent:int8 files:jsonb error:text "
        "diagnosis:text finished_at:timestamptz suppressed:int8",
    ),
    ("scheduler/tasks/sql/tasks.sql", "set_next_run"): (
        "uuid timestamptz",
        "",
    ),
    ("scheduler/tasks/sql/tasks.sql", "jobs_to_issue"): (
        "timestamptz timestamptz int8",
        "id:uuid after_seq:int8 through_seq:int8",
    ),
    ("scheduler/tasks/sql/tasks.sql", "page_deliveries"): (
        "uuid uuid timestamptz uuid int8",
        "id:uuid task_id:uuid account_id:uuid purpose:text after_seq:int8 through_seq:int8 "
        "state:text layout:jsonb resend_of:uuid frame_field:text frame_from:timestamptz "
        "frame_to:timestamptz reserved_at:timestamptz attempts:int4 lease_until:timestamptz "
        "next_attempt_at:timestamptz rows_sent:int8 bytes_sent:int8 files:jsonb error:text "
        "diagnosis:text finished_at:timestamptz suppressed:int8",
    ),
    ("scheduler/tasks/sql/tasks.sql", "get_delivery"): (
        "uuid uuid",
        "id:uuid task_id:uuid account_id:uuid purpose:text after_seq:int8 through_seq:int8 "
        "state:text layout:jsonb resend_of:uuid frame_field:text frame_from:timestamptz "
        "frame_to:timestamptz reserved_at:timestamptz attempts:int4 lease_until:timestamptz "
        "next_attempt_at:timestamptz rows_sent:int8 bytes_sent:int8 files:jsonb error:text "
        "diagnosis:text finished_at:timestamptz suppressed:int8",
    ),
    ("scheduler/tasks/sql/tasks.sql", "has_news"): ("uuid int8 int8 uuid[]", "news:bool"),
    ("scheduler/tasks/sql/tasks.sql", "skip_empty"): ("uuid int8", ""),
    ("scheduler/tasks/sql/tasks.sql", "attention_events"): (
        "uuid bool",
        "id:uuid account_id:uuid task_id:uuid delivery_id:uuid diagnosis:text message:text "
        "created_at:timestamptz resolved_at:timestamptz connection_id:uuid",
    ),
    ("scheduler/tasks/sql/tasks.sql", "count_in_range"): (
        "uuid int8 int8 uuid[]",
        "count:int8",
    ),
    ("scheduler/tasks/sql/tasks.sql", "delivery_lags"): (
        "",
        "id:uuid account_id:uuid lag_s:float8",
    ),
    # delivery/sql/live.sql
    ("delivery/sql/live.sql", "live_claim"): (
        "text float8 int8 text[]",
        "connection_id:uuid version:int8",
    ),
    ("delivery/sql/live.sql", "live_layout"): ("uuid uuid", "id:uuid definition:jsonb"),
    ("delivery/sql/key_slots.sql", "key_slots_ensure"): ("text int4", ""),
    ("delivery/sql/key_slots.sql", "key_slot_take"): ("text text int4 float8", "slot:int4"),
    ("delivery/sql/key_slots.sql", "key_slots_renew"): ("text text int4[] float8", "slot:int4"),
    ("delivery/sql/key_slots.sql", "key_slots_release"): ("text text int4[]", ""),
    ("delivery/sql/live.sql", "live_release"): (
        "text",
        "",
    ),
    ("delivery/sql/live.sql", "live_connection"): (
        "uuid",
        "account_id:uuid kind:text name:text settings:jsonb secrets:jsonb version:int8 "
        "audience_ids:uuid[] "
        "delivered_seq:int8 starts_at:timestamptz disabled_at:timestamptz disabled_reason:text "
        "failing_since:timestamptz",
    ),
    ("delivery/sql/live.sql", "live_place_cursor"): (
        "uuid text int8",
        "delivered_seq:int8",
    ),
    ("delivery/sql/live.sql", "live_watermark"): (
        "",
        "watermark:int8",
    ),
    ("delivery/sql/live.sql", "live_rows"): (
        "uuid int8 int8 uuid[] int8 timestamptz",
        _ALL_TEXT,
    ),
    ("delivery/sql/live.sql", "live_rows_by_seq"): (
        "uuid int8[]",
        _ALL_TEXT,
    ),
    ("delivery/sql/live.sql", "live_due"): (
        "uuid timestamptz int8",
        "seq:int8 attempts:int4 first_failed_at:timestamptz",
    ),
    ("delivery/sql/live.sql", "live_next_due"): (
        "uuid timestamptz",
        "next_at:timestamptz waiting:int8",
    ),
    ("delivery/sql/live.sql", "live_accounts_between"): ("int8 int8", "account_id:uuid"),
    ("delivery/sql/live.sql", "live_advance"): (
        "uuid text int8 timestamptz timestamptz int8",
        "failing_since:timestamptz",
    ),
    ("delivery/sql/live.sql", "live_park"): (
        "uuid uuid int8[] text[] int4[] timestamptz[] timestamptz[] timestamptz[] int4[] text[]",
        "",
    ),
    ("delivery/sql/live.sql", "live_done"): (
        "uuid int8[]",
        "",
    ),
    ("delivery/sql/live.sql", "live_endpoint_gone"): ("uuid timestamptz text", "removed:uuid"),
    ("delivery/sql/live.sql", "live_disable"): (
        "uuid timestamptz text",
        "account_id:uuid",
    ),
    ("delivery/sql/live.sql", "live_attention"): (
        "uuid uuid uuid text text",
        "",
    ),
    ("delivery/sql/live.sql", "live_hold_for"): (
        "uuid timestamptz",
        "",
    ),
    ("delivery/sql/live.sql", "live_maintain"): (
        "int4 int4",
        "dropped:int4",
    ),
    ("delivery/sql/live.sql", "live_custom_fields"): (
        "uuid",
        "name:text description:text definition:jsonb",
    ),
    # scheduler/live/sql/live.sql
    ("scheduler/live/sql/live.sql", "live_state"): (
        "uuid uuid",
        "kind:text live:bool delivered_seq:int8 disabled_at:timestamptz disabled_reason:text "
        "failing_since:timestamptz last_success_at:timestamptz suppressed:int8 owner:text "
        "waiting:int8 dead:int8 rejected:int8",
    ),
    ("scheduler/live/sql/live.sql", "live_settings"): (
        "uuid uuid",
        "settings:jsonb",
    ),
    ("scheduler/live/sql/live.sql", "live_messages_page"): (
        "uuid uuid text timestamptz int8 int8",
        "seq:int8 state:text attempts:int4 next_attempt_at:timestamptz "
        "first_failed_at:timestamptz last_attempt_at:timestamptz last_status:int4 "
        "last_error:text",
    ),
    ("scheduler/live/sql/live.sql", "live_attempts_page"): (
        "uuid uuid int8 timestamptz int8 int8",
        "attempted_at:timestamptz seq:int8 attempt:int4 status:int4 latency_ms:float4 "
        "outcome:text rule:text response_head:text error:text",
    ),
    ("scheduler/live/sql/live.sql", "live_replay_seqs"): (
        "uuid uuid int8[]",
        "",
    ),
    ("scheduler/live/sql/live.sql", "live_replay_received"): (
        "uuid uuid timestamptz timestamptz uuid[]",
        "",
    ),
    ("scheduler/live/sql/live.sql", "live_replay_failed"): (
        "uuid uuid timestamptz",
        "",
    ),
    ("scheduler/live/sql/live.sql", "live_enable"): (
        "uuid uuid",
        "",
    ),
    ("scheduler/live/sql/live.sql", "live_disable_by_person"): (
        "uuid uuid text",
        "",
    ),
    ("scheduler/live/sql/live.sql", "live_wakeup"): (
        "text",
        "pg_notify:void",
    ),
    # common/audiences/sql/audiences.sql
    ("common/audiences/sql/audiences.sql", "create_audience"): (
        "uuid uuid text text text",
        _AUDIENCE,
    ),
    ("common/audiences/sql/audiences.sql", "get_audience"): ("uuid uuid", _AUDIENCE),
    ("common/audiences/sql/audiences.sql", "page_audiences"): (
        "uuid timestamptz uuid int8",
        _AUDIENCE,
    ),
    ("common/audiences/sql/audiences.sql", "delete_audience"): (
        "uuid uuid",
        "deleted:bool found:bool users:text[]",
    ),
    ("common/audiences/sql/audiences.sql", "create_audience_staging"): ("", ""),
    ("common/audiences/sql/audiences.sql", "empty_audience_staging"): ("", ""),
    ("common/audiences/sql/audiences.sql", "count_staged_members"): (
        "",
        "valid:int8 people:int8 md5_only:bool",
    ),
    ("common/audiences/sql/audiences.sql", "lock_audience"): ("uuid uuid", "id:uuid"),
    ("common/audiences/sql/audiences.sql", "remove_absent_sha256"): ("uuid", ""),
    ("common/audiences/sql/audiences.sql", "remove_absent_md5"): ("uuid", ""),
    ("common/audiences/sql/audiences.sql", "insert_staged_members"): ("uuid", ""),
    ("common/audiences/sql/audiences.sql", "finish_import"): (
        "uuid int8 bool bool varbit",
        _AUDIENCE,
    ),
    ("common/audiences/sql/audiences.sql", "connection_kind"): ("uuid uuid", "kind:text"),
    ("common/audiences/sql/audiences.sql", "insert_source"): ("uuid uuid text uuid jsonb int4", ""),
    ("common/audiences/sql/audiences.sql", "get_sources"): ("uuid uuid[]", _AUDIENCE_SOURCE),
    ("common/audiences/sql/audiences.sql", "request_refresh"): ("uuid uuid", _AUDIENCE_SOURCE),
    ("common/audiences/sql/audiences.sql", "claim_due_sources"): (
        "timestamptz int8 uuid float8",
        _AUDIENCE_SOURCE,
    ),
    ("common/audiences/sql/audiences.sql", "source_connection"): (
        "uuid uuid",
        "kind:text settings:jsonb secrets:jsonb",
    ),
    ("common/audiences/sql/audiences.sql", "renew_source_lease"): (
        "uuid uuid timestamptz",
        "audience_id:uuid",
    ),
    ("common/audiences/sql/audiences.sql", "finish_pull"): (
        "uuid uuid timestamptz jsonb timestamptz bool",
        "audience_id:uuid",
    ),
    ("common/audiences/sql/targets.sql", "audience_targets"): (
        "uuid uuid[]",
        "id:uuid name:text kind:text state:text member_count:int8 md5_only:bool",
    ),
    # export/sql/zapier.sql
    ("export/sql/zapier.sql", "insert_subscription"): (
        "uuid uuid uuid text text uuid[] uuid",
        _SUBSCRIPTION,
    ),
    ("export/sql/zapier.sql", "remove_subscription"): ("uuid uuid text", "removed:uuid"),
    ("export/sql/zapier.sql", "get_subscription"): ("uuid uuid", _SUBSCRIPTION),
    ("export/sql/zapier.sql", "page_subscriptions"): (
        "uuid timestamptz uuid int8",
        _SUBSCRIPTION,
    ),
    ("export/sql/zapier.sql", "latest_seqs"): ("uuid int8", "seq:int8"),
    ("export/sql/zapier.sql", "latest_seqs_in_campaigns"): ("uuid uuid[] int8", "seq:int8"),
}


def _named_queries() -> list[tuple[Path, str]]:
    return [(path, name) for path in QUERY_FILES for name in load_queries(path)]


def _query_id(value: object) -> str:
    return str(value.relative_to(SERVICES)) if isinstance(value, Path) else str(value)


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to a freshly migrated database."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


def test_every_service_query_file_is_found_and_names_its_queries() -> None:
    found = {str(path.relative_to(SERVICES)) for path in QUERY_FILES}
    assert {
        "common/sql/referral_rows.sql",
        "ingest/sql/queries.sql",
        "scheduler/sql/layouts.sql",
    } <= found
    assert all(load_queries(path) for path in QUERY_FILES), "a query file without named queries"


def test_every_named_query_has_a_signature_and_every_signature_a_query() -> None:
    named = {(str(path.relative_to(SERVICES)), name) for path, name in _named_queries()}

    assert sorted(named - SIGNATURES.keys()) == [], "queries without an expected signature"
    assert sorted(SIGNATURES.keys() - named) == [], "signatures of queries that are gone"


@pytest.mark.parametrize(("path", "name"), _named_queries(), ids=_query_id)
async def test_every_named_query_takes_and_answers_the_expected_types(
    connection: asyncpg.Connection, path: Path, name: str
) -> None:
    queries = load_queries(path)
    for setup in SETUP_QUERIES:
        if setup in queries:
            await connection.execute(queries[setup])

    statement = await connection.prepare(queries[name])

    parameters = " ".join(t.name for t in statement.get_parameters())
    results = " ".join(f"{a.name}:{a.type.name}" for a in statement.get_attributes())
    expected = SIGNATURES.get((str(path.relative_to(SERVICES)), name))
    assert (parameters, results) == expected

"""The referral's shape is declared once: referral_shape.COLUMNS agrees with referral.proto,
the ingest model, the scanner's configuration and every SQL column list that repeats it.

Each failure names the place that is missing a column, or has one too many.
"""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.common.gen.handoff.ingest.v1 import referral_pb2
from services.common.layouts.catalog import ROW_FIELDS, STANDARD_FIELDS
from services.common.layouts.defaults import DEFAULT_LAYOUT
from services.common.referral_rows import QUERIES as ROW_QUERIES
from services.common.referral_shape import (
    COLUMNS,
    COPY_COLUMNS,
    NESTED,
    ROW_COLUMNS,
    FieldType,
    Source,
    fields_of,
)
from services.ingest import native
from services.ingest.model import ReferralRow
from services.ingest.store import QUERIES as INGEST_QUERIES

SHAPE = "services/common/referral_shape.py"
INGEST_SQL = "services/ingest/sql/queries.sql"
ROWS_SQL = "services/common/sql/referral_rows.sql"
MESSAGES: dict[Source, Descriptor] = {
    Source.REFERRAL: referral_pb2.Referral.DESCRIPTOR,
    Source.CONSUMER: referral_pb2.Consumer.DESCRIPTOR,
    Source.OPT_IN: referral_pb2.OptIn.DESCRIPTOR,
}
# The proto types each column may store, by the column's SQL type.
_TEXT_FIELD = (FieldDescriptor.TYPE_STRING, None)
PROTO_TYPES = {
    "text": _TEXT_FIELD,
    "uuid": _TEXT_FIELD,
    "date": _TEXT_FIELD,
    "inet": _TEXT_FIELD,
    "timestamptz": (FieldDescriptor.TYPE_MESSAGE, "google.protobuf.Timestamp"),
    "jsonb": (FieldDescriptor.TYPE_MESSAGE, "handoff.ingest.v1.Referral.ExtraEntry"),
}


def _differences(place: str, found: list[str] | tuple[str, ...], expected: tuple[str, ...]) -> str:
    missing = [name for name in expected if name not in found]
    extra = [name for name in found if name not in expected]
    if missing or extra:
        return f"{place}: missing {missing}, not in {SHAPE}: {extra}"
    return f"{place}: same columns, in another order than {SHAPE}"


def _assert_columns(
    place: str, found: list[str] | tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert tuple(found) == expected, _differences(place, found, expected)


def _names(listing: str, prefix: str = "") -> list[str]:
    """The items of a comma-separated SQL list (each after `prefix`, if given); commas
    inside parentheses do not separate."""
    items, depth, start = [], 0, 0
    for position, char in enumerate(listing + ","):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(listing[start:position].strip().removeprefix(prefix))
            start = position + 1
    return items


def _between(sql: str, start: str, end: str) -> str:
    """The text of `sql` after the first `start` and before the next `end`."""
    found = re.search(re.escape(start) + r"(.*?)" + re.escape(end), sql, re.DOTALL)
    assert found is not None, f"{start!r} ... {end!r} not found"
    return found.group(1)


def test_every_proto_field_is_a_column_and_every_column_a_proto_field() -> None:
    for source, descriptor in MESSAGES.items():
        fields = [f.name for f in descriptor.fields if f.name not in NESTED]
        declared = fields_of(source)
        missing = [name for name in fields if name not in declared]
        assert not missing, f"{descriptor.name} fields of referral.proto not in {SHAPE}: {missing}"
        unknown = [name for name in declared if name not in fields]
        assert not unknown, f"{SHAPE} columns that are not {descriptor.name} fields: {unknown}"
    nested = {f.name: f.message_type for f in MESSAGES[Source.REFERRAL].fields if f.message_type}
    assert {name: nested[name] for name in NESTED} == {
        name: MESSAGES[source] for name, source in NESTED.items()
    }


def test_every_column_stores_its_proto_fields_type() -> None:
    for column in COLUMNS:
        if column.source is Source.STORED:
            continue
        field = MESSAGES[column.source].fields_by_name[column.name]
        message = field.message_type.full_name if field.message_type else None
        assert (field.type, message) == PROTO_TYPES[column.sql_type], column.name
        assert field.is_repeated == (column.sql_type == "jsonb"), column.name  # the map only


def test_stored_only_columns_are_seq_and_received_at() -> None:
    assert fields_of(Source.STORED) == ("seq", "received_at")
    assert tuple(c for c in ROW_COLUMNS if c not in ("seq", "received_at")) == COPY_COLUMNS


def test_the_ingest_model_row_has_the_copy_columns() -> None:
    _assert_columns("services/ingest/model.py ReferralRow", ReferralRow._fields, COPY_COLUMNS)


def test_the_catalog_lists_every_column_with_its_type() -> None:
    _assert_columns("services/common/layouts/catalog.py ROW_FIELDS", ROW_FIELDS, ROW_COLUMNS)
    assert [f.type for f in STANDARD_FIELDS] == [c.catalog_type for c in COLUMNS]
    texts = {c.name for c in COLUMNS if c.sql_type == "text"}
    assert {f.name for f in STANDARD_FIELDS if f.type is FieldType.STRING} == texts


def test_the_scanner_is_configured_with_every_copy_column_by_field_number() -> None:
    columns = native.scanner_columns()

    assert len(columns) == len(COPY_COLUMNS)
    for name, (message, number, _rule, limit, nullable) in zip(COPY_COLUMNS, columns, strict=True):
        column = next(c for c in COLUMNS if c.name == name)
        source = list(MESSAGES)[message]
        assert source is column.source, name
        assert MESSAGES[source].fields_by_name[name].number == number, name
        assert (limit, nullable) == (column.max_length, column.nullable), name


def test_the_insert_statements_list_every_copy_column() -> None:
    selects = {
        "insert_referrals": ("SELECT i.", "FROM json_populate_recordset"),
        "insert_staged_referrals": ("SELECT nextval('referral_seq'),", "FROM writer"),
    }
    for name, (start, end) in selects.items():
        sql = INGEST_QUERIES[name]
        inserted = _names(_between(sql, "INSERT INTO referrals (", ")"))
        selected = _names(_between(sql, start, end), prefix="i.")
        if name == "insert_staged_referrals":  # seq first, from nextval (the start above)
            assert inserted[0] == "seq"
            inserted = inserted[1:]
        _assert_columns(f"{INGEST_SQL} {name}, INSERT INTO referrals (...)", inserted, COPY_COLUMNS)
        _assert_columns(f"{INGEST_SQL} {name}, SELECT i....", selected, COPY_COLUMNS)


def test_the_staging_table_has_every_copy_column_with_its_type() -> None:
    body = _between(INGEST_QUERIES["create_referral_staging"], "referral_staging (", ") ON COMMIT")
    pairs = [item.split() for item in body.split(",")]
    _assert_columns(
        f"{INGEST_SQL} create_referral_staging", [name for name, _ in pairs], COPY_COLUMNS
    )
    types = {c.name: c.sql_type for c in COLUMNS}
    assert {name: kind for name, kind in pairs} == {name: types[name] for name, _ in pairs}


def test_the_row_readers_select_every_column_in_catalog_order() -> None:
    in_range = ROW_QUERIES["referral_rows_in_range"]
    cases = re.findall(r"'(\w+)' = ANY \(\$5\) THEN (.+?) ELSE '' END AS (\w+)", in_range)
    place = f"{ROWS_SQL} referral_rows_in_range"
    _assert_columns(place, ["seq", *(alias for _, _, alias in cases)], ROW_COLUMNS)
    for wanted, expression, alias in cases:
        assert wanted == alias, f"{place}: {alias} is read when {wanted!r} is wanted"
        assert f"r.{alias}" in expression, f"{place}: {alias} reads {expression}"
    latest = _between(ROW_QUERIES["latest_referral_rows"], "SELECT r.", "FROM referrals")
    aliases = [item.split()[-1].removeprefix("r.") for item in _names("r." + latest)]
    _assert_columns(f"{ROWS_SQL} latest_referral_rows", ["seq", *aliases[1:]], ROW_COLUMNS)


def test_a_new_column_reaches_the_default_layout_only_by_a_deliberate_change() -> None:
    # Advertisers' files must not grow a column overnight: this list changes by hand, with
    # services/common/layouts/defaults.py, never because a field was added to the shape.
    assert [c.field for c in DEFAULT_LAYOUT.columns] == [
        "email", "title", "first_name", "last_name", "gender", "date_of_birth", "mobile",
        "phone", "address_line1", "address_line2", "city", "state", "postcode", "country",
        "language", "campaign_name", "partner_name", "opted_in_at", "ip_address",
        "partner_referral_id", "received_at", "seq",
    ]  # fmt: skip


def test_shape_module_path_is_the_one_failures_name() -> None:
    assert (Path(__file__).resolve().parents[2] / SHAPE).is_file()

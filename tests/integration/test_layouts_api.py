"""LayoutService over real gRPC and PostgreSQL: catalog, CRUD, validation, safe deletes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from services.common.gen.handoff.scheduler.v1 import layouts_pb2 as pb
from tests.integration.layouts_support import create_account, layout_client, violations

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.layouts_pb2_grpc import (
        LayoutServiceAsyncStub as Stub,
    )


@pytest.fixture
async def client(pool: asyncpg.Pool) -> AsyncIterator[Stub]:
    """A LayoutService client on the test's database."""
    async with layout_client(pool) as stub:
        yield stub


@pytest.fixture
async def account(pool: asyncpg.Pool) -> str:
    """A fresh account id."""
    account_id, _ = await create_account(pool)
    return str(account_id)


def _full_name(
    name: str = "full_name", template: str = "{first_name} {last_name}"
) -> pb.CustomField:
    return pb.CustomField(
        name=name,
        steps=[
            pb.Step(template=pb.TemplateStep(template=template)),
            pb.Step(trim=pb.TrimStep(collapse_spaces=True)),
        ],
    )


def _gender() -> pb.CustomField:
    return pb.CustomField(
        name="gender_label",
        source="gender",
        steps=[
            pb.Step(
                map=pb.ValueMapStep(
                    entries=[
                        pb.ValueMapStep.Entry(match="M", value="Male"),
                        pb.ValueMapStep.Entry(match="F", value="Female"),
                    ],
                    case_insensitive=True,
                    empty_value="Unknown",
                )
            )
        ],
    )


def _layout(name: str, *columns: tuple[str, str], is_default: bool = False) -> pb.Layout:
    return pb.Layout(
        name=name,
        columns=[pb.Column(header=h, field=f) for h, f in columns],
        is_default=is_default,
    )


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


async def test_field_catalog_lists_standard_context_and_custom_fields(
    client: Stub, account: str
) -> None:
    fields = {f.name: f for f in (await client.ListFields(pb.ListFieldsRequest())).fields}
    assert fields["email"].type == pb.FIELD_TYPE_STRING
    assert fields["email"].kind == pb.FIELD_KIND_STANDARD
    assert fields["opted_in_at"].type == pb.FIELD_TYPE_TIMESTAMP
    assert fields["seq"].type == pb.FIELD_TYPE_INTEGER
    assert fields["campaign_name"].kind == pb.FIELD_KIND_CONTEXT
    assert {"partner_name", "delivery_id", "delivery_time", "received_at"} <= set(fields)
    assert fields["extra.<key>"].kind == pb.FIELD_KIND_EXTRA
    assert all(f.description for f in fields.values())
    await client.CreateCustomField(pb.CreateCustomFieldRequest(account_id=account, field=_gender()))
    listed = await client.ListFields(pb.ListFieldsRequest(account_id=account))
    assert [f.name for f in listed.fields if f.kind == pb.FIELD_KIND_CUSTOM] == ["gender_label"]


async def test_custom_field_create_get_list_update_delete(client: Stub, account: str) -> None:
    created = await client.CreateCustomField(
        pb.CreateCustomFieldRequest(account_id=account, field=_full_name())
    )
    assert created.id
    assert created.version == 1
    assert created.steps[0].template.template == "{first_name} {last_name}"
    fetched = await client.GetCustomField(
        pb.GetCustomFieldRequest(account_id=account, id=created.id)
    )
    assert fetched == created
    await client.CreateCustomField(pb.CreateCustomFieldRequest(account_id=account, field=_gender()))
    listed = await client.ListCustomFields(pb.ListCustomFieldsRequest(account_id=account))
    assert [f.name for f in listed.fields] == ["full_name", "gender_label"]

    change = _full_name(template="{last_name}, {first_name}")
    change.id, change.version = created.id, 1
    updated = await client.UpdateCustomField(
        pb.UpdateCustomFieldRequest(account_id=account, field=change)
    )
    assert updated.version == 2
    assert updated.steps[0].template.template == "{last_name}, {first_name}"

    stale = await _error(
        client.UpdateCustomField(pb.UpdateCustomFieldRequest(account_id=account, field=change))
    )
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
    change.version, change.name = 0, "renamed"
    renamed = await _error(
        client.UpdateCustomField(pb.UpdateCustomFieldRequest(account_id=account, field=change))
    )
    assert violations(renamed) == [("field.name", "IMMUTABLE")]

    await client.DeleteCustomField(pb.DeleteCustomFieldRequest(account_id=account, id=created.id))
    gone = await _error(
        client.GetCustomField(pb.GetCustomFieldRequest(account_id=account, id=created.id))
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_create_is_idempotent_on_id_and_names_are_unique(client: Stub, account: str) -> None:
    field = _gender()
    field.id = str(uuid.uuid4())
    first = await client.CreateCustomField(
        pb.CreateCustomFieldRequest(account_id=account, field=field)
    )
    again = await client.CreateCustomField(
        pb.CreateCustomFieldRequest(account_id=account, field=field)
    )
    assert again == first
    field.id = str(uuid.uuid4())
    duplicate = await _error(
        client.CreateCustomField(pb.CreateCustomFieldRequest(account_id=account, field=field))
    )
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_invalid_definitions_name_the_step_and_the_problem(
    client: Stub, account: str
) -> None:
    field = pb.CustomField(
        name="opted_local",
        source="opted_in_at",
        steps=[
            pb.Step(trim=pb.TrimStep()),
            pb.Step(date=pb.DateStep(output=pb.DATE_FORM_PATTERN, output_pattern="%d/%m/%Q")),
            pb.Step(template=pb.TemplateStep(template="{value} {nickname}")),
            pb.Step(date=pb.DateStep(output_time_zone="Mars/Base")),
        ],
    )
    error = await _error(
        client.CreateCustomField(pb.CreateCustomFieldRequest(account_id=account, field=field))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [
        ("field.steps[1].date.output_pattern", "BAD_PATTERN"),
        ("field.steps[2].template.template", "UNKNOWN_FIELD"),
        ("field.steps[3].date.output_time_zone", "UNKNOWN_TIME_ZONE"),
    ]
    assert "%Q" in (error.details() or "")


async def test_a_name_with_a_trailing_line_break_is_invalid_not_a_database_error(
    client: Stub, account: str
) -> None:
    field = pb.CustomField(name="upper\n", source="city")
    error = await _error(
        client.CreateCustomField(pb.CreateCustomFieldRequest(account_id=account, field=field))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [("field.name", "INVALID_NAME")]


async def test_a_step_without_a_type_is_refused(client: Stub, account: str) -> None:
    field = pb.CustomField(name="empty_step", steps=[pb.Step(trim=pb.TrimStep()), pb.Step()])
    error = await _error(
        client.CreateCustomField(pb.CreateCustomFieldRequest(account_id=account, field=field))
    )
    assert violations(error) == [("field.steps[1]", "REQUIRED")]


async def test_reference_cycles_are_refused_at_save(client: Stub, account: str) -> None:
    greeting = pb.CustomField(
        name="greeting", steps=[pb.Step(template=pb.TemplateStep(template="Dear {full_name}"))]
    )
    full = await client.CreateCustomField(
        pb.CreateCustomFieldRequest(account_id=account, field=_full_name())
    )
    await client.CreateCustomField(pb.CreateCustomFieldRequest(account_id=account, field=greeting))
    cyclic = _full_name(template="{greeting} {last_name}")
    cyclic.id = full.id
    error = await _error(
        client.UpdateCustomField(pb.UpdateCustomFieldRequest(account_id=account, field=cyclic))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [("field.steps[0].template.template", "REFERENCE_CYCLE")]
    assert "full_name -> greeting -> full_name" in (error.details() or "")


async def test_deleting_a_custom_field_in_use_is_refused(client: Stub, account: str) -> None:
    full = await client.CreateCustomField(
        pb.CreateCustomFieldRequest(account_id=account, field=_full_name())
    )
    layout = await client.CreateLayout(
        pb.CreateLayoutRequest(
            account_id=account,
            layout=_layout("CRM export", ("Email", "email"), ("Name", "full_name")),
        )
    )
    request = pb.DeleteCustomFieldRequest(account_id=account, id=full.id)
    refused = await _error(client.DeleteCustomField(request))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "layout 'CRM export'" in (refused.details() or "")

    await client.DeleteLayout(pb.DeleteLayoutRequest(account_id=account, id=layout.id))
    greeting = pb.CustomField(name="greeting", source="full_name")
    await client.CreateCustomField(pb.CreateCustomFieldRequest(account_id=account, field=greeting))
    refused = await _error(client.DeleteCustomField(request))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "custom field 'greeting'" in (refused.details() or "")


async def test_layout_crud_and_paging(client: Stub, account: str) -> None:
    await client.CreateCustomField(pb.CreateCustomFieldRequest(account_id=account, field=_gender()))
    created = await client.CreateLayout(
        pb.CreateLayoutRequest(
            account_id=account,
            layout=_layout("A layout", ("E-mail", "email"), ("Gender", "gender_label")),
        )
    )
    assert created.version == 1
    assert created.format.WhichOneof("body") == "csv"
    assert created.formula_guard == pb.FORMULA_GUARD_STRICT
    for name in ("B layout", "C layout"):
        await client.CreateLayout(
            pb.CreateLayoutRequest(account_id=account, layout=_layout(name, ("x", "seq")))
        )
    page = await client.ListLayouts(pb.ListLayoutsRequest(account_id=account, page_size=2))
    assert [lay.name for lay in page.layouts] == ["A layout", "B layout"]
    rest = await client.ListLayouts(
        pb.ListLayoutsRequest(account_id=account, page_size=2, page_token=page.next_page_token)
    )
    assert ([lay.name for lay in rest.layouts], rest.next_page_token) == (["C layout"], "")

    change = _layout("A layout, renamed", ("Answer", "extra.q1"))
    change.id, change.version = created.id, created.version
    change.format.json_lines.empty_as_null = True
    updated = await client.UpdateLayout(pb.UpdateLayoutRequest(account_id=account, layout=change))
    assert (updated.name, updated.version) == ("A layout, renamed", 2)
    assert updated.format.json_lines.empty_as_null
    clash = _layout("B layout", ("x", "seq"))
    clash.id = created.id
    error = await _error(
        client.UpdateLayout(pb.UpdateLayoutRequest(account_id=account, layout=clash))
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_invalid_layouts_name_each_column(client: Stub, account: str) -> None:
    layout = _layout("Bad", ("Email", "email"), ("Email", "city"), ("Nick", "nickname"))
    layout.format.csv.delimiter = "ab"
    error = await _error(
        client.CreateLayout(pb.CreateLayoutRequest(account_id=account, layout=layout))
    )
    assert violations(error) == [
        ("layout.columns[1].header", "DUPLICATE"),
        ("layout.columns[2].field", "UNKNOWN_FIELD"),
        ("layout.format.csv.delimiter", "INVALID_FORMAT"),
    ]


async def test_every_account_has_a_default_layout(client: Stub, account: str) -> None:
    builtin = await client.GetDefaultLayout(pb.GetDefaultLayoutRequest(account_id=account))
    assert builtin.id == ""
    assert builtin.is_default
    assert [c.field for c in builtin.columns][:3] == ["email", "title", "first_name"]
    first = await client.CreateLayout(
        pb.CreateLayoutRequest(
            account_id=account, layout=_layout("Mine", ("E", "email"), is_default=True)
        )
    )
    assert (
        await client.GetDefaultLayout(pb.GetDefaultLayoutRequest(account_id=account))
    ).id == first.id
    second = await client.CreateLayout(
        pb.CreateLayoutRequest(
            account_id=account, layout=_layout("New", ("S", "seq"), is_default=True)
        )
    )
    assert (
        await client.GetDefaultLayout(pb.GetDefaultLayoutRequest(account_id=account))
    ).id == second.id
    again = await client.GetLayout(pb.GetLayoutRequest(account_id=account, id=first.id))
    assert not again.is_default


async def test_accounts_are_isolated_and_ids_checked(
    client: Stub, account: str, pool: asyncpg.Pool
) -> None:
    other, _ = await create_account(pool)
    mine = await client.CreateLayout(
        pb.CreateLayoutRequest(account_id=account, layout=_layout("Mine", ("E", "email")))
    )
    hidden = await _error(client.GetLayout(pb.GetLayoutRequest(account_id=str(other), id=mine.id)))
    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    unknown = await _error(client.ListLayouts(pb.ListLayoutsRequest(account_id=str(uuid.uuid4()))))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    malformed = await _error(client.GetLayout(pb.GetLayoutRequest(account_id="nope", id=mine.id)))
    assert violations(malformed) == [("account_id", "INVALID_FORMAT")]


async def test_concurrent_saves_cannot_create_a_cycle_or_orphan_a_layout(
    client: Stub, account: str
) -> None:
    first = await client.CreateCustomField(
        pb.CreateCustomFieldRequest(account_id=account, field=_full_name("a", "{first_name}"))
    )
    second = await client.CreateCustomField(
        pb.CreateCustomFieldRequest(account_id=account, field=_full_name("b", "{last_name}"))
    )
    a_reads_b, b_reads_a = _full_name("a", "{b}"), _full_name("b", "{a}")
    a_reads_b.id, b_reads_a.id = first.id, second.id
    outcomes = await asyncio.gather(
        client.UpdateCustomField(pb.UpdateCustomFieldRequest(account_id=account, field=a_reads_b)),
        client.UpdateCustomField(pb.UpdateCustomFieldRequest(account_id=account, field=b_reads_a)),
        return_exceptions=True,
    )
    failed = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(failed) == 1
    assert violations(failed[0]) == [("field.steps[0].template.template", "REFERENCE_CYCLE")]

    layout = _layout("Uses a", ("A", "a"))
    racing = await asyncio.gather(
        client.CreateLayout(pb.CreateLayoutRequest(account_id=account, layout=layout)),
        client.DeleteCustomField(pb.DeleteCustomFieldRequest(account_id=account, id=first.id)),
        return_exceptions=True,
    )
    layouts = await client.ListLayouts(pb.ListLayoutsRequest(account_id=account))
    fields = await client.ListCustomFields(pb.ListCustomFieldsRequest(account_id=account))
    names = {f.name for f in fields.fields}
    # Either the layout exists and still has its field, or the field is gone and so is it.
    assert [lay.name for lay in layouts.layouts] == (["Uses a"] if "a" in names else [])
    assert sum(isinstance(o, grpc.aio.AioRpcError) for o in racing) == 1

"""PreviewLayout over real gRPC against the real database."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2

from services.common.gen.handoff.ingest.v1 import referral_pb2
from services.common.gen.handoff.scheduler.v1 import layouts_pb2 as pb
from tests.integration.layouts_support import (
    create_account,
    insert_referrals,
    layout_client,
    violations,
)

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    from services.common.gen.handoff.scheduler.v1.layouts_pb2_grpc import (
        LayoutServiceAsyncStub as Stub,
    )
START = datetime(2024, 3, 30, 23, 30, tzinfo=UTC)  # London moves to BST on 2024-03-31 01:00Z

CUSTOM_FIELDS = [
    pb.CustomField(
        name="gender_label",
        source="gender",
        steps=[
            pb.Step(
                map=pb.ValueMapStep(
                    entries=[
                        pb.ValueMapStep.Entry(match="M", value="Male"),
                        pb.ValueMapStep.Entry(match="F", value="Female"),
                    ],
                    empty_value="Unknown",
                )
            )
        ],
    ),
    pb.CustomField(
        name="full_name",
        steps=[pb.Step(template=pb.TemplateStep(template="{first_name} {last_name}"))],
    ),
    pb.CustomField(
        name="mobile_e164",
        source="mobile",
        steps=[pb.Step(phone=pb.PhoneStep(default_country="GB", country_field="country"))],
    ),
    pb.CustomField(
        name="opted_local",
        source="opted_in_at",
        steps=[
            pb.Step(date=pb.DateStep(output=pb.DATE_FORM_PATTERN, output_pattern="%d/%m/%Y %H:%M"))
        ],
    ),
    pb.CustomField(name="email_hash", source="email", steps=[pb.Step(hash=pb.HashStep())]),
]
COLUMNS = [
    ("Seq", "seq"),
    ("Name", "full_name"),
    ("Gender", "gender_label"),
    ("Mobile", "mobile_e164"),
    ("Opted in", "opted_local"),
    ("Campaign", "campaign_name"),
    ("Email hash", "email_hash"),
]


@pytest.fixture
async def client(pool: asyncpg.Pool) -> AsyncIterator[Stub]:
    """A LayoutService client on the test's database."""
    async with layout_client(pool) as stub:
        yield stub


async def _saved_layout(client: Stub, account: str) -> pb.Layout:
    for field in CUSTOM_FIELDS:
        await client.CreateCustomField(pb.CreateCustomFieldRequest(account_id=account, field=field))
    layout = pb.Layout(name="CRM", columns=[pb.Column(header=h, field=f) for h, f in COLUMNS])
    return await client.CreateLayout(pb.CreateLayoutRequest(account_id=account, layout=layout))


def _expected(seqs: list[int], i: int, gender: str, mobile: str, time: str) -> list[str]:
    """One previewed row of the referral inserted i-th (opted in on 31 March, London time)."""
    email_hash = hashlib.sha256(f"user{i}@example.com".encode()).hexdigest()
    name = f"Ada{i} Lovelace"
    return [str(seqs[i]), name, gender, mobile, f"31/03/2024 {time}", "Spring offer", email_hash]


async def test_preview_renders_the_latest_referrals_and_reports_problems(
    client: Stub, pool: asyncpg.Pool
) -> None:
    account_id, campaign_id = await create_account(pool, time_zone="Europe/London")
    account = str(account_id)
    rows = [
        {
            "email": f"User{i}@Example.com",
            "first_name": f"Ada{i}",
            "gender": ["M", "F", ""][i % 3],
            "mobile": "12345" if i == 9 else f"07911 1234{i:02d}",
            "opted_in_at": START + timedelta(minutes=30 * i),
        }
        for i in range(12)
    ]
    seqs = await insert_referrals(pool, account_id, campaign_id, rows)
    layout = await _saved_layout(client, account)

    preview = await client.PreviewLayout(
        pb.PreviewLayoutRequest(account_id=account, layout_id=layout.id, latest=4)
    )

    assert preview.media_type == "text/csv; charset=utf-8"
    assert list(preview.headers) == [h for h, _ in COLUMNS]
    expected = [
        _expected(seqs, 8, "Unknown", "+447911123408", "04:30"),
        _expected(seqs, 9, "Male", "12345", "05:00"),
        _expected(seqs, 10, "Female", "+447911123410", "05:30"),
        _expected(seqs, 11, "Unknown", "+447911123411", "06:00"),
    ]
    assert [list(r.cells) for r in preview.rows] == expected
    # The CSV output guards formulas: the E.164 numbers start with "+", so they get a quote.
    guarded = [[f"'{c}" if c.startswith("+") else c for c in row] for row in expected]
    lines = ["Seq,Name,Gender,Mobile,Opted in,Campaign,Email hash"] + [",".join(r) for r in guarded]
    assert preview.output == ("\r\n".join(lines) + "\r\n").encode()
    (problem,) = preview.problems
    assert (problem.row, problem.seq, problem.field, problem.step, problem.code, problem.value) == (
        1, seqs[9], "mobile_e164", 0, "INVALID_PHONE", "12345",
    )  # fmt: skip
    assert [(c.field, c.code, c.count) for c in preview.problem_counts] == [
        ("mobile_e164", "INVALID_PHONE", 1)
    ]


async def test_preview_crosses_the_dst_change_in_the_accounts_zone(
    client: Stub, pool: asyncpg.Pool
) -> None:
    account_id, campaign_id = await create_account(pool, time_zone="Europe/London")
    await insert_referrals(
        pool,
        account_id,
        campaign_id,
        [{"opted_in_at": START + timedelta(minutes=30 * i)} for i in range(5)],
    )
    layout = await _saved_layout(client, str(account_id))
    preview = await client.PreviewLayout(
        pb.PreviewLayoutRequest(account_id=str(account_id), layout_id=layout.id)
    )
    assert [r.cells[4] for r in preview.rows] == [
        "30/03/2024 23:30", "31/03/2024 00:00", "31/03/2024 00:30", "31/03/2024 02:00",
        "31/03/2024 02:30",
    ]  # fmt: skip


async def test_preview_of_a_draft_over_sample_referrals_as_json_lines(
    client: Stub, pool: asyncpg.Pool
) -> None:
    account_id, campaign_id = await create_account(pool)
    account = str(account_id)
    sample = referral_pb2.Referral(
        campaign_id=str(campaign_id),
        partner_referral_id="sample-1",
        consumer=referral_pb2.Consumer(
            email="zoë@example.com",
            first_name="Zoë",
            last_name="Ørsted",
            date_of_birth="1990-05-17",
        ),
        extra={"q1": "yes"},
    )
    broken = referral_pb2.Referral(
        campaign_id=str(campaign_id), consumer=referral_pb2.Consumer(date_of_birth="17/05/1990")
    )
    draft_field = pb.CustomField(
        name="dob_us",
        source="date_of_birth",
        steps=[
            pb.Step(
                date=pb.DateStep(
                    output=pb.DATE_FORM_PATTERN, output_pattern="%-m/%-d/%Y", fallback=""
                )
            )
        ],
    )
    draft = pb.Layout(
        columns=[
            pb.Column(header="name", field="first_name"),
            pb.Column(header="dob", field="dob_us"),
            pb.Column(header="answer", field="extra.q1"),
            pb.Column(header="campaign", field="campaign_name"),
            pb.Column(header="delivery", field="delivery_id"),
        ]
    )
    preview = await client.PreviewLayout(
        pb.PreviewLayoutRequest(
            account_id=account,
            layout=draft,
            custom_fields=[draft_field],
            samples=[sample, broken],
            format=pb.OutputFormat(json_lines=pb.JsonLinesFormat(empty_as_null=True), gzip=True),
        )
    )
    assert preview.media_type == "application/x-ndjson"
    objects = [json.loads(line) for line in preview.output.decode().splitlines()]
    context = {"campaign": "Spring offer", "delivery": "preview"}
    assert objects == [
        {"name": "Zoë", "dob": "5/17/1990", "answer": "yes", **context},
        {"name": None, "dob": None, "answer": None, **context},
    ]
    (problem,) = preview.problems
    assert (problem.row, problem.seq, problem.code, problem.value) == (
        1,
        0,
        "INVALID_DATE",
        "17/05/1990",
    )
    saved = await client.ListCustomFields(pb.ListCustomFieldsRequest(account_id=account))
    assert not saved.fields  # drafts are never saved


async def test_preview_without_a_layout_uses_the_default(client: Stub, pool: asyncpg.Pool) -> None:
    account_id, _ = await create_account(pool)
    preview = await client.PreviewLayout(pb.PreviewLayoutRequest(account_id=str(account_id)))
    assert list(preview.headers)[:3] == ["email", "title", "first_name"]
    assert preview.output.decode().count("\r\n") == 1  # no referrals yet: the header alone


async def test_preview_validates_drafts_like_a_save(client: Stub, pool: asyncpg.Pool) -> None:
    account_id, _ = await create_account(pool)
    bad_field = pb.CustomField(
        name="when",
        steps=[pb.Step(date=pb.DateStep(output=pb.DATE_FORM_PATTERN, output_pattern="%Q"))],
    )
    draft = pb.Layout(
        columns=[pb.Column(header="w", field="when"), pb.Column(header="x", field="nope")]
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.PreviewLayout(
            pb.PreviewLayoutRequest(
                account_id=str(account_id), layout=draft, custom_fields=[bad_field]
            )
        )
    assert violations(raised.value) == [
        ("custom_fields[0].steps[0].date.output_pattern", "BAD_PATTERN"),
        ("layout.columns[1].field", "UNKNOWN_FIELD"),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.PreviewLayout(pb.PreviewLayoutRequest(account_id=str(account_id), latest=1000))
    assert violations(raised.value) == [("latest", "OUT_OF_RANGE")]


@pytest.mark.parametrize("delimiter", ['"', "\n", "ab", "x"])
async def test_preview_validates_a_format_override_like_a_save(
    client: Stub, pool: asyncpg.Pool, delimiter: str
) -> None:
    account_id, _ = await create_account(pool)
    override = pb.OutputFormat(csv=pb.CsvFormat(delimiter=delimiter))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.PreviewLayout(
            pb.PreviewLayoutRequest(account_id=str(account_id), format=override)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value) == [("format.csv.delimiter", "INVALID_FORMAT")]


def _opted_sample(campaign_id: object, seconds: int, nanos: int = 0) -> referral_pb2.Referral:
    opted = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    return referral_pb2.Referral(
        campaign_id=str(campaign_id), opt_in=referral_pb2.OptIn(opted_in_at=opted)
    )


EARLIEST = -62_135_596_800  # 0001-01-01T00:00:00Z, the first time a datetime holds
OPTED_DRAFT = pb.Layout(columns=[pb.Column(header="opted", field="opted_in_at")])


async def test_sample_opt_in_times_out_of_range_are_invalid_arguments_naming_the_sample(
    client: Stub, pool: asyncpg.Pool
) -> None:
    account_id, campaign_id = await create_account(pool)
    samples = [
        _opted_sample(campaign_id, 0),
        _opted_sample(campaign_id, 2**40),
        _opted_sample(campaign_id, EARLIEST - 1),
        _opted_sample(campaign_id, 0, nanos=2**30),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.PreviewLayout(
            pb.PreviewLayoutRequest(account_id=str(account_id), layout=OPTED_DRAFT, samples=samples)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value) == [
        ("samples[1].opt_in.opted_in_at", "OUT_OF_RANGE"),
        ("samples[2].opt_in.opted_in_at", "OUT_OF_RANGE"),
        ("samples[3].opt_in.opted_in_at", "OUT_OF_RANGE"),
    ]


async def test_sample_opt_in_times_at_the_edges_of_the_range_render(
    client: Stub, pool: asyncpg.Pool
) -> None:
    account_id, campaign_id = await create_account(pool)
    samples = [_opted_sample(campaign_id, EARLIEST), _opted_sample(campaign_id, 253_402_300_799)]
    preview = await client.PreviewLayout(
        pb.PreviewLayoutRequest(account_id=str(account_id), layout=OPTED_DRAFT, samples=samples)
    )
    assert [list(r.cells) for r in preview.rows] == [
        ["0001-01-01T00:00:00Z"],
        ["9999-12-31T23:59:59Z"],
    ]


async def test_preview_caps_each_value_and_refuses_drafts_that_copy_it_absurdly(
    client: Stub, pool: asyncpg.Pool
) -> None:
    account_id, campaign_id = await create_account(pool)
    account = str(account_id)
    draft = pb.Layout(columns=[pb.Column(header="twice", field="twice")])
    twice = pb.CustomField(
        name="twice",
        source="first_name",
        steps=[pb.Step(template=pb.TemplateStep(template="{value}" * 16))],
    )
    long_name = "x" * 5_000  # 16 copies: 80,000 characters, over the 65,536 cap
    samples = [
        referral_pb2.Referral(
            campaign_id=str(campaign_id), consumer=referral_pb2.Consumer(first_name=name)
        )
        for name in ("Jo", long_name)
    ]
    preview = await client.PreviewLayout(
        pb.PreviewLayoutRequest(
            account_id=account, layout=draft, custom_fields=[twice], samples=samples
        )
    )
    assert [list(r.cells) for r in preview.rows] == [["Jo" * 16], [long_name]]
    (problem,) = preview.problems
    assert (problem.row, problem.field, problem.step, problem.code) == (
        1, "twice", 0, "VALUE_TOO_LONG",
    )  # fmt: skip
    assert [(c.field, c.code, c.count) for c in preview.problem_counts] == [
        ("twice", "VALUE_TOO_LONG", 1)
    ]

    bomb = pb.CustomField(
        name="twice",
        source="email",
        steps=[pb.Step(template=pb.TemplateStep(template="{value}" * 4))] * 12,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.PreviewLayout(
            pb.PreviewLayoutRequest(account_id=account, layout=draft, custom_fields=[bomb])
        )
    assert violations(raised.value) == [
        ("custom_fields[0].steps[2].template.template", "TOO_MANY_COPIES")
    ]


async def test_sample_fields_beyond_ingest_sizes_are_refused_by_name(
    client: Stub, pool: asyncpg.Pool
) -> None:
    account_id, campaign_id = await create_account(pool)
    sample = referral_pb2.Referral(
        campaign_id=str(campaign_id),
        consumer=referral_pb2.Consumer(first_name="x" * 5_001),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.PreviewLayout(
            pb.PreviewLayoutRequest(account_id=str(account_id), samples=[sample])
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value) == [("samples[0].consumer.first_name", "TOO_LONG")]


async def test_preview_too_large_to_answer_is_refused_not_built(
    client: Stub, pool: asyncpg.Pool
) -> None:
    account_id, campaign_id = await create_account(pool)
    wide = pb.Layout(
        name="wide", columns=[pb.Column(header=f"c{i}", field="extra.note") for i in range(300)]
    )
    sample = referral_pb2.Referral(campaign_id=str(campaign_id), extra={"note": "n" * 4_000})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.PreviewLayout(
            pb.PreviewLayoutRequest(account_id=str(account_id), layout=wide, samples=[sample] * 100)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value) == [("layout", "TOO_LARGE")]

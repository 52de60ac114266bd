"""Referral messages become domain values, and results become messages, losslessly."""

from __future__ import annotations

from datetime import UTC, datetime

from services.common.errors import FieldProblem
from services.common.gen.handoff.ingest.v1 import ingest_pb2, referral_pb2
from services.ingest.model import CONSUMER_FIELDS, OPT_IN_FIELDS, RowResult, RowStatus
from services.ingest.server import referral_input, row_result_message


def test_every_consumer_and_opt_in_field_is_carried_over() -> None:
    message = referral_pb2.Referral(account_id="a", campaign_id="c", partner_referral_id="p")
    for name in CONSUMER_FIELDS:
        setattr(message.consumer, name, f"consumer {name}")
    texts = [name for name in OPT_IN_FIELDS if name != "opted_in_at"]
    for name in texts:
        setattr(message.opt_in, name, f"opt-in {name}")
    message.opt_in.opted_in_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    message.extra["k"] = "v"

    value = referral_input(message)

    assert (value.account_id, value.campaign_id, value.partner_referral_id) == ("a", "c", "p")
    assert value.consumer == {name: f"consumer {name}" for name in CONSUMER_FIELDS}
    assert value.opt_in == {name: f"opt-in {name}" for name in texts}
    assert value.opted_in_at == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert value.extra == {"k": "v"}
    assert value.decode_problems == ()


def test_unset_opt_in_time_is_none_not_the_epoch() -> None:
    assert referral_input(referral_pb2.Referral()).opted_in_at is None


def test_out_of_range_timestamp_becomes_a_problem_of_that_row() -> None:
    message = referral_pb2.Referral()
    message.opt_in.opted_in_at.nanos = -1

    value = referral_input(message)

    assert value.opted_in_at is None
    assert [(p.field, p.code) for p in value.decode_problems] == [
        ("opt_in.opted_in_at", "INVALID_FORMAT")
    ]


def test_row_result_message_carries_status_seq_and_every_error() -> None:
    result = RowResult(
        7,
        RowStatus.REJECTED,
        "p-7",
        0,
        (FieldProblem("consumer.email", "REQUIRED", "is required"),),
    )

    message = row_result_message(result)

    assert (message.index, message.status, message.partner_referral_id) == (
        7,
        ingest_pb2.RowResult.REJECTED,
        "p-7",
    )
    assert [(e.field, e.code, e.message) for e in message.errors] == [
        ("consumer.email", "REQUIRED", "is required")
    ]

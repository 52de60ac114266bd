"""How Sailthru's answers are read, and how its rate-limit headers hold sends."""

from __future__ import annotations

import json

import pytest

from services.delivery.transports.base import Diagnosis
from services.delivery.transports.http.responses import Outcome
from services.delivery.transports.sailthru.answers import RateLimitGate, rate_limit, read_answer
from services.delivery.transports.sailthru.payloads import (
    JobState,
    ReferralRefusedError,
    VarSpec,
    job_status,
    profile_vars,
    user_upsert,
)


def _error(code: int) -> bytes:
    return json.dumps({"error": code, "errormsg": f"error {code}"}).encode()


@pytest.mark.parametrize(
    ("status", "code", "outcome", "diagnosis"),
    [
        (429, 43, Outcome.RETRY, None),
        (500, 9, Outcome.RETRY, None),
        (503, None, Outcome.RETRY, None),
        (401, 3, Outcome.DISABLE, Diagnosis.AUTH),
        (401, 5, Outcome.DISABLE, Diagnosis.AUTH),
        (403, 4, Outcome.DISABLE, Diagnosis.AUTH),
        (400, 15, Outcome.DISABLE, Diagnosis.CONFIG),
        (400, 11, Outcome.REJECTED, None),
        (400, 2, Outcome.REJECTED, None),
        (400, 99, Outcome.REJECTED, None),
    ],
)
def test_error_codes_sort_into_retry_attention_and_rejected(
    status: int, code: int | None, outcome: Outcome, diagnosis: Diagnosis | None
) -> None:
    body = _error(code) if code is not None else b"<html>busy</html>"
    reading = read_answer(status, body)
    assert (reading.outcome, reading.diagnosis) == (outcome, diagnosis)
    assert reading.error_code == code


def test_a_json_object_without_error_is_accepted_and_a_bare_401_needs_attention() -> None:
    assert read_answer(200, b'{"keys": {"email": "a@b.co"}}').outcome is Outcome.ACCEPTED
    assert read_answer(200, b"not json").outcome is Outcome.RETRY
    assert read_answer(401, b"").outcome is Outcome.DISABLE
    assert read_answer(302, b"").outcome is Outcome.RETRY


def test_gate_holds_until_reset_once_the_window_is_spent() -> None:
    now = [1000.0]
    gate = RateLimitGate(clock=lambda: now[0])
    headers = {
        "X-Rate-Limit-Limit": "2",
        "X-Rate-Limit-Remaining": "1",
        "X-Rate-Limit-Reset": "1030",
    }
    gate.observe("POST /user", 200, headers)
    assert gate.hold_s("POST /user") == 0
    gate.take("POST /user")  # the last one of the window
    assert gate.hold_s("POST /user") == 30
    assert gate.hold_s("GET /job") == 0  # windows are per endpoint and method
    now[0] = 1031.0
    assert gate.hold_s("POST /user") == 0


def test_a_429_spends_the_window_even_with_remaining_in_its_headers() -> None:
    gate = RateLimitGate(clock=lambda: 1000.0)
    headers = {
        "X-Rate-Limit-Limit": "40",
        "X-Rate-Limit-Remaining": "3",
        "X-Rate-Limit-Reset": "1010",
    }
    gate.observe("POST /job", 429, headers)
    assert gate.hold_s("POST /job") == 10
    gate.observe("GET /job", 429, {})  # no headers: a minute, the documented window
    assert gate.hold_s("GET /job") == 60
    assert rate_limit({"X-Rate-Limit-Limit": "x"}) is None


def test_user_upsert_types_vars_and_refuses_unusable_emails() -> None:
    specs = (VarSpec("first_name", "first_name"), VarSpec("age", "extra.age", "number"))
    profile = profile_vars(specs, {"first_name": "Ann", "extra.age": "41"})
    payload = user_upsert(" ann@example.com ", profile, "Referrals")
    assert payload == {
        "id": "ann@example.com",
        "key": "email",
        "vars": {"first_name": "Ann", "age": 41},
        "lists": {"Referrals": 1},
    }
    with pytest.raises(ReferralRefusedError, match="not a number"):
        profile_vars(specs, {"extra.age": "forty"})
    with pytest.raises(ReferralRefusedError, match="not a usable email"):
        user_upsert("not-an-email", {}, "Referrals")


def test_job_status_keeps_the_jobs_counts() -> None:
    status = job_status({"job_id": "j1", "status": "completed", "imported": 3, "invalid": 1})
    assert status.state is JobState.COMPLETED
    assert status.counts == {"imported": 3, "invalid": 1}
    with pytest.raises(ValueError, match="unknown job status"):
        job_status({"job_id": "j1", "status": "exploded"})

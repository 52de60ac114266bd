"""The Sailthru client against the Sailthru fake: what the fake ends up holding, referral by
referral, and how each of its failure answers is read."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from services.common.egress import EgressPolicy
from services.delivery.transports.base import Diagnosis, PermanentError, RetryableError
from services.delivery.transports.http.responses import Outcome
from services.delivery.transports.sailthru.client import JobPolling, SailthruClient
from services.delivery.transports.sailthru.payloads import JobState, user_upsert
from services.delivery.transports.sailthru.signing import signature_matches
from tests.fakes.sailthru import FakeSailthru, sailthru_fake
from tests.integration.access_support import LOOPBACK

FAST = JobPolling(first_s=0.01, factor=2.0, max_s=0.05, deadline_s=5.0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSailthru]:
    async with sailthru_fake() as running:
        yield running


def _client(
    fake: FakeSailthru, *, secret: str | None = None, key: str | None = None
) -> SailthruClient:
    return SailthruClient(
        fake.url,
        key if key is not None else fake.api_key,
        secret if secret is not None else fake.secret,
        LOOPBACK,
        polling=FAST,
    )


async def test_upserts_land_in_the_fake_referral_by_referral(fake: FakeSailthru) -> None:
    people = [("ann@example.com", "Ann"), ("bob@example.com", "Bob")]
    async with _client(fake) as client:
        for email, name in people:
            answer = await client.request(
                "POST", "user", user_upsert(email, {"first_name": name}, "Referrals")
            )
            assert answer.exchange.verdict.outcome is Outcome.ACCEPTED, answer.exchange.error
    for email, name in people:
        profile = fake.profiles[email]
        assert (profile.id, profile.vars, profile.lists) == (
            email,
            {"first_name": name},
            {"Referrals": 1},
        )
    assert set(fake.members["Referrals"]) == {"ann@example.com", "bob@example.com"}


async def test_a_wrong_secret_is_refused_as_a_bad_signature_needing_attention(
    fake: FakeSailthru,
) -> None:
    async with _client(fake, secret="not-the-secret") as client:
        answer = await client.request("POST", "user", user_upsert("ann@example.com", {}, ""))
    assert answer.exchange.status == 401
    assert answer.reading is not None
    assert answer.reading.error_code == 5
    assert answer.exchange.verdict.outcome is Outcome.DISABLE
    assert answer.exchange.diagnosis is Diagnosis.AUTH
    async with _client(fake, key="other-key") as client:
        answer = await client.request("POST", "user", user_upsert("ann@example.com", {}, ""))
    assert answer.reading is not None
    assert answer.reading.error_code == 3
    assert fake.profiles == {}


async def test_an_email_sailthru_refuses_rejects_that_referral_only(fake: FakeSailthru) -> None:
    async with _client(fake) as client:
        bad = await client.request("POST", "user", {"id": "ann@localhost", "key": "email"})
        good = await client.request("POST", "user", user_upsert("bob@example.com", {}, ""))
    assert bad.reading is not None
    assert bad.reading.error_code == 11
    assert bad.exchange.verdict.outcome is Outcome.REJECTED
    assert good.exchange.verdict.outcome is Outcome.ACCEPTED
    assert list(fake.profiles) == ["bob@example.com"]


async def test_spent_window_holds_sends_until_the_reset_instead_of_earning_a_429() -> None:
    async with sailthru_fake(FakeSailthru(limits={"POST /user": 2}, window_s=1.0)) as fake:
        async with _client(fake) as client:
            started = time.time()
            for n in range(3):
                answer = await client.request(
                    "POST", "user", user_upsert(f"p{n}@example.com", {}, "Referrals")
                )
                assert answer.exchange.verdict.outcome is Outcome.ACCEPTED
            assert client.gate.held_s > 0
        assert [r.status for r in fake.received] == [200, 200, 200]
        third = fake.calls("POST /user")[2].at
        first = fake.calls("POST /user")[0].at
        assert third - first >= 0.5  # the third waited for the next window
        assert time.time() - started < 5
    assert set(fake.profiles) == {"p0@example.com", "p1@example.com", "p2@example.com"}


async def test_a_429_with_headers_waits_until_the_reset_then_succeeds() -> None:
    limited = FakeSailthru(limits={"POST /user": 1}, window_s=1.0)
    async with sailthru_fake(limited) as fake, _client(fake) as other, _client(fake) as client:
        await other.request("POST", "user", user_upsert("a@example.com", {}, ""))
        refused = await client.request("POST", "user", user_upsert("b@example.com", {}, ""))
        assert refused.exchange.status == 429
        assert refused.reading is not None
        assert refused.reading.error_code == 43
        assert refused.exchange.verdict.outcome is Outcome.RETRY
        assert refused.exchange.retry_after_s is not None
        assert 0 < refused.exchange.retry_after_s <= 2
        again = await client.request("POST", "user", user_upsert("b@example.com", {}, ""))
        assert again.exchange.verdict.outcome is Outcome.ACCEPTED
    assert set(fake.profiles) == {"a@example.com", "b@example.com"}
    assert [r.status for r in fake.calls("POST /user")] == [200, 429, 200]


def _csv(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    path = tmp_path / "referrals.csv"
    lines = ["email,first_name", *(f"{e},{n}" for e, n in rows)]
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


async def test_import_job_is_polled_to_completion_and_the_list_holds_each_referral(
    fake: FakeSailthru, tmp_path: Path
) -> None:
    file = _csv(tmp_path, [("ann@example.com", "Ann"), ("nobody", "X"), ("bob@example.com", "Bob")])
    async with _client(fake) as client:
        status = await client.import_file("Referrals", file)
    assert status.state is JobState.COMPLETED
    assert status.counts is not None
    assert (status.counts["imported"], status.counts["invalid"]) == (2, 1)
    assert fake.members["Referrals"] == {
        "ann@example.com": {"first_name": "Ann"},
        "bob@example.com": {"first_name": "Bob"},
    }
    assert len(fake.calls("GET /job")) == fake.pending_polls + 1
    assert fake.uploads == [file.read_bytes()]


async def test_import_job_ending_in_error_is_a_retryable_failure(
    fake: FakeSailthru, tmp_path: Path
) -> None:
    fake.fail_jobs_with = "the file could not be parsed"
    async with _client(fake) as client:
        with pytest.raises(RetryableError, match="ended in error: the file could not be parsed"):
            await client.import_file("Referrals", _csv(tmp_path, [("a@example.com", "A")]))
    assert fake.members == {}


async def test_import_to_an_unknown_list_is_permanent(fake: FakeSailthru, tmp_path: Path) -> None:
    async with _client(fake) as client:
        with pytest.raises(PermanentError) as caught:
            await client.import_file("Nope", _csv(tmp_path, [("a@example.com", "A")]))
    assert caught.value.diagnosis is Diagnosis.CONFIG
    assert "unknown list" in caught.value.message


async def test_job_calls_wait_out_a_429_and_carry_on(fake: FakeSailthru, tmp_path: Path) -> None:
    fake.window_s = 1.0
    fake.limits = {"GET /job": 1}
    fake.pending_polls = 1
    async with _client(fake) as client:
        status = await client.import_file("Referrals", _csv(tmp_path, [("a@example.com", "A")]))
    assert status.state is JobState.COMPLETED
    assert "a@example.com" in fake.members["Referrals"]


async def test_postback_is_signed_by_the_fake_as_sailthru_signs(
    fake: FakeSailthru, tmp_path: Path
) -> None:
    received: list[dict[str, str]] = []

    async def postback(request: web.Request) -> web.Response:
        received.append({k: str(v) for k, v in (await request.post()).items()})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/postback", postback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with _client(fake) as client:
            await client.import_file(
                "Referrals",
                _csv(tmp_path, [("a@example.com", "A")]),
                f"http://127.0.0.1:{port}/postback",
            )
    finally:
        await runner.cleanup()
    assert len(received) == 1
    assert received[0]["status"] == "completed"
    assert signature_matches(fake.secret, received[0])


async def test_probe_proves_key_secret_and_list(fake: FakeSailthru) -> None:
    async with _client(fake) as client:
        steps = await client.probe("Referrals")
        assert any("Referrals" in s for s in steps)
        with pytest.raises(PermanentError) as unknown:
            await client.probe("Nope")
    assert unknown.value.diagnosis is Diagnosis.CONFIG
    async with _client(fake, secret="wrong") as client:
        with pytest.raises(PermanentError) as refused:
            await client.probe("Referrals")
    assert refused.value.diagnosis is Diagnosis.AUTH


async def test_records_never_carry_the_key_the_secret_or_the_signature(fake: FakeSailthru) -> None:
    async with _client(fake) as client:
        posted = await client.request("POST", "user", user_upsert("ann@example.com", {}, ""))
        got = await client.request("GET", "list", {"list": "Referrals"})
    sig = fake.received[0].params["sig"]
    for answer in (posted, got):
        recorded = answer.exchange.url + answer.exchange.request_body.decode()
        recorded += str(answer.exchange.request_headers)
        for secret in (fake.api_key, fake.secret, sig):
            assert secret not in recorded


async def test_egress_policy_refuses_loopback_unless_allowed(fake: FakeSailthru) -> None:
    async with SailthruClient(fake.url, fake.api_key, fake.secret, EgressPolicy()) as client:
        answer = await client.request("POST", "user", user_upsert("ann@example.com", {}, ""))
    assert answer.reading is None
    assert answer.exchange.diagnosis is Diagnosis.EGRESS
    assert fake.received == []


async def test_plain_http_is_refused_beyond_loopback() -> None:
    async with SailthruClient("http://api.sailthru.com", "k", "s", LOOPBACK) as client:
        answer = await client.request("GET", "list", {"list": "x"})
    assert answer.exchange.diagnosis is Diagnosis.TLS
    await asyncio.sleep(0)


async def test_an_import_file_is_uploaded_in_chunks_never_held_whole(tmp_path: Path) -> None:
    """20 MB through the multipart upload: the client's memory stays a few chunks."""
    received = 0

    async def discard(request: web.Request) -> web.Response:
        nonlocal received
        while chunk := await request.content.read(64 * 1024):
            received += len(chunk)
        return web.json_response({"job_id": "j1", "status": "pending"})

    app = web.Application(client_max_size=1024**3)
    app.router.add_post("/job", discard)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    big = tmp_path / "big.csv"
    line = b"email,first_name\r\n" + b"someone@example.com,Someone\r\n" * 2000
    with big.open("wb") as out:
        while out.tell() < 20 * 1024 * 1024:
            out.write(line)
    try:
        async with SailthruClient(f"http://127.0.0.1:{port}", "k", "s", LOOPBACK) as client:
            tracemalloc.start()
            answer = await client.request("POST", "job", {"job": "import"}, file=big)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    finally:
        await runner.cleanup()
    assert answer.exchange.status == 200
    assert received >= big.stat().st_size
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while uploading 20 MB"


async def test_a_poll_lost_on_the_way_is_asked_again(fake: FakeSailthru, tmp_path: Path) -> None:
    fake.scripted["GET /job"] = [(500, {"error": 9, "errormsg": "Internal Error"})] * 2
    async with _client(fake) as client:
        status = await client.import_file("Referrals", _csv(tmp_path, [("a@example.com", "A")]))
    assert status.state is JobState.COMPLETED
    assert len(fake.jobs) == 1  # imported once, not again
    assert [r.status for r in fake.calls("GET /job")][:2] == [500, 500]

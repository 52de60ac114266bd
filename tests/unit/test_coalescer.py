"""The coalescer owns its batch tasks: it refuses calls outside its block, lets running
batches finish when it closes, and makes a task that dies known to callers and process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.errors import UnavailableError
from services.common.service import until_shutdown_or_failure
from services.ingest.coalescer import UnaryCoalescer
from services.ingest.model import ReferralInput, ReferralRow, RowResult, RowStatus


def _coalescer(**options: Any) -> UnaryCoalescer[str]:
    def prepare(messages: Sequence[str], now: datetime) -> list[ReferralInput | ReferralRow]:
        raise AssertionError("the batches of these tests never reach validation")

    return UnaryCoalescer(None, lambda: datetime.now(UTC), prepare, **options)  # type: ignore[arg-type]


def _result(message: str) -> RowResult:
    return RowResult(0, RowStatus.ACCEPTED, message, 1)


async def test_calls_outside_the_block_are_unavailable() -> None:
    coalescer = _coalescer()
    with pytest.raises(UnavailableError):
        await coalescer.submit("before")
    async with coalescer:
        pass
    with pytest.raises(UnavailableError):
        await coalescer.submit("after")


async def test_closing_lets_a_running_batch_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()

    async def slow_flush(batch: list[tuple[str, asyncio.Future[RowResult]]]) -> None:
        await release.wait()
        for message, future in batch:
            future.set_result(_result(message))

    async with _coalescer() as coalescer:
        monkeypatch.setattr(coalescer, "_flush", slow_flush)
        call = asyncio.ensure_future(coalescer.submit("in flight"))
        await asyncio.sleep(0.01)
        asyncio.get_running_loop().call_later(0.05, release.set)
    # Left the block while the batch waited: it was let finish, not cancelled.
    assert (await call).partner_referral_id == "in flight"


async def test_closing_cancels_a_batch_that_outlasts_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def stuck_flush(batch: list[tuple[str, asyncio.Future[RowResult]]]) -> None:
        await asyncio.Event().wait()

    async with _coalescer(close_timeout_s=0.05) as coalescer:
        monkeypatch.setattr(coalescer, "_flush", stuck_flush)
        call = asyncio.ensure_future(coalescer.submit("stuck"))
        await asyncio.sleep(0.01)
    assert coalescer._tasks == set()
    with pytest.raises((UnavailableError, asyncio.CancelledError)):
        await call


async def test_a_batch_task_that_dies_fails_its_callers_and_the_watch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_flush(batch: list[tuple[str, asyncio.Future[RowResult]]]) -> None:
        raise RuntimeError("a bug in the coalescer")

    async with _coalescer() as coalescer:
        monkeypatch.setattr(coalescer, "_flush", broken_flush)
        with pytest.raises(UnavailableError):
            await asyncio.wait_for(coalescer.submit("lost"), 1)  # not left waiting
        with pytest.raises(RuntimeError, match="a bug in the coalescer"):
            await asyncio.wait_for(coalescer.failed(), 1)
        # And the service's main loop stops on it instead of serving on.
        with pytest.raises(RuntimeError, match="a bug in the coalescer"):
            await asyncio.wait_for(until_shutdown_or_failure(coalescer.failed()), 1)

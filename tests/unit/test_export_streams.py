"""The export process's stream slots, and how a refusal is answered."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.common.errors import UnavailableError
from services.export.problems import domain_problem
from services.export.streams import StreamSlots, stream_limit


async def test_a_request_waits_for_a_slot_then_is_refused_with_retry_after() -> None:
    slots = StreamSlots(1, wait_s=0.05)
    async with slots.slot():
        with pytest.raises(UnavailableError) as refused:
            async with slots.slot():
                pass
    response = domain_problem(refused.value, "/v1/referrals/export")
    assert (response.status, response.headers["Retry-After"]) == (503, "1")
    assert "retry" in json.loads(response.text or "")["detail"]
    async with slots.slot():  # freed again
        pass


async def test_a_slot_freed_while_waiting_is_taken() -> None:
    slots = StreamSlots(1, wait_s=2)
    order: list[str] = []

    async def second() -> None:
        async with slots.slot():
            order.append("second")

    async with slots.slot():
        waiting = asyncio.ensure_future(second())
        await asyncio.sleep(0.02)
        order.append("first done")
    await waiting
    assert order == ["first done", "second"]


def test_the_default_leaves_a_connection_for_everything_else() -> None:
    assert (stream_limit(5), stream_limit(1)) == (4, 1)

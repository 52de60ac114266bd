"""The memory budget: requests reserve their expected cost; batches beyond it are refused,
streams wait until memory is given back, and a request alone is always let in."""

from __future__ import annotations

import asyncio

import pytest

from services.common.errors import ResourceExhaustedError
from services.common.grpc_server import MAX_MESSAGE_BYTES
from services.ingest.memory_budget import DEFAULT_BUDGET_BYTES, MemoryBudget


def test_a_request_beyond_the_budget_is_refused_until_memory_is_given_back() -> None:
    budget = MemoryBudget(budget_bytes=100, cost_per_byte=10)
    first = budget.take(6)
    with pytest.raises(ResourceExhaustedError) as caught:
        budget.take(6)
    assert caught.value.retryable
    budget.give(first)
    assert budget.take(6) == 60


def test_the_largest_request_fits_in_the_default_budget() -> None:
    assert MemoryBudget().cost(MAX_MESSAGE_BYTES) <= DEFAULT_BUDGET_BYTES


def test_a_request_alone_is_let_in_whatever_its_size() -> None:
    budget = MemoryBudget(budget_bytes=10, cost_per_byte=10)
    with budget.holding(5):
        assert budget.used == 50
    assert budget.used == 0


def test_holding_gives_back_when_the_block_fails() -> None:
    budget = MemoryBudget(budget_bytes=100, cost_per_byte=1)
    with pytest.raises(KeyError), budget.holding(30):
        raise KeyError("boom")
    assert budget.used == 0


async def test_a_stream_waits_for_memory_instead_of_being_refused() -> None:
    budget = MemoryBudget(budget_bytes=100, cost_per_byte=10)
    first = budget.take(8)
    waiting = asyncio.ensure_future(budget.wait_and_take(5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    budget.give(first)
    assert await asyncio.wait_for(waiting, 1) == 50
    assert budget.used == 50

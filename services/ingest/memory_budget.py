"""A per-process bound on the memory that requests in flight may cost, counted in bytes.

gRPC hands a handler the whole request, and decoding, validating and storing it costs a
multiple of its size on the wire. Every request reserves that expected cost before the
work starts and gives it back when it is done; a batch beyond the budget is refused with
RESOURCE_EXHAUSTED and RetryInfo, a stream waits (its client is slowed down by HTTP/2 flow
control) until earlier work gives memory back. The bound on calls in flight
(call_limits.py) counts calls; this counts what they cost, so fifty large batches cannot
take the process past its memory limit where fifty small ones would be fine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from services.common.errors import ResourceExhaustedError
from services.common.grpc_server import MAX_MESSAGE_BYTES

MIB = 1024 * 1024
# Bytes of process memory per byte of request, measured by tests/bench/ingest_memory.py
# (docs/operations.md): 8 concurrent batches of 10,000 typical referrals (4 MiB each on the
# wire) cost 6.1x their size, one alone 8.5x (small strings cost most per byte); rows with
# long free text 2x. The highest, rounded up, so the budget errs towards refusing.
COST_PER_WIRE_BYTE = 9
# One request of the largest size gRPC accepts always fits in the default budget.
DEFAULT_BUDGET_BYTES = MAX_MESSAGE_BYTES * COST_PER_WIRE_BYTE
# What an ingest process needs beyond its budget: itself at rest (57 MiB measured), with
# room for the allocator's fragmentation, and the messages gRPC holds whole before their
# handler has reserved or refused them (a refusal frees them at once). The container's
# memory limit (k8s/base/ingest.yaml) is checked against it by test_k8s_manifests.py.
BASELINE_BYTES = 128 * MIB
IN_TRANSIT_BYTES = 4 * MAX_MESSAGE_BYTES


def process_memory_bytes(budget_bytes: int = DEFAULT_BUDGET_BYTES) -> int:
    """The memory one ingest process may need with this budget."""
    return BASELINE_BYTES + budget_bytes + IN_TRANSIT_BYTES


class MemoryBudget:
    """At most `budget_bytes` of expected cost in flight; see the module's docstring."""

    def __init__(
        self, budget_bytes: int = DEFAULT_BUDGET_BYTES, cost_per_byte: int = COST_PER_WIRE_BYTE
    ) -> None:
        self.budget = budget_bytes
        self.cost_per_byte = cost_per_byte
        self.used = 0
        self._freed = asyncio.Event()

    def cost(self, wire_bytes: int) -> int:
        """The expected memory cost of a request of `wire_bytes`."""
        return wire_bytes * self.cost_per_byte

    def _fits(self, cost: int) -> bool:
        # Alone, any request is let in: one can never be refused for ever.
        return self.used == 0 or self.used + cost <= self.budget

    def take(self, wire_bytes: int) -> int:
        """Reserve a request's cost, or refuse it; return the cost to give back."""
        cost = self.cost(wire_bytes)
        if not self._fits(cost):
            raise ResourceExhaustedError(
                f"ingest is at its memory budget ({self.budget // MIB} MiB of requests in "
                "flight); retry shortly"
            )
        self.used += cost
        return cost

    async def wait_and_take(self, wire_bytes: int) -> int:
        """Reserve a request's cost, waiting until it fits; return the cost to give back."""
        cost = self.cost(wire_bytes)
        while not self._fits(cost):
            self._freed.clear()
            await self._freed.wait()
        self.used += cost
        return cost

    def give(self, cost: int) -> None:
        """Give back what `take` or `wait_and_take` reserved."""
        self.used -= cost
        self._freed.set()

    @contextmanager
    def holding(self, wire_bytes: int) -> Iterator[None]:
        """`take` for the block, given back when it ends (however it ends)."""
        cost = self.take(wire_bytes)
        try:
            yield
        finally:
            self.give(cost)

"""Ingest benchmarks: batch and unary throughput over gRPC, latency, server memory.

Each figure is printed beside a baseline measured in the same run: raw asyncpg COPY of
the same rows into the same table, a no-op unary RPC (health Check) on the same server,
and, for the Python path (HANDOFF_PURE_PYTHON=1), the same batches with the C scanner.

Every phase starts after a CHECKPOINT, so that it does not pay for the dirty pages of the
phase before it: on this VM a checkpoint that lands in a phase stalls commits for
hundreds of milliseconds (the unary p99 went from about 15 ms to 150-335 ms).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from ipaddress import ip_address
from urllib.parse import urlsplit

import asyncpg
import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.auth.store import CredentialStore
from services.common.gen.handoff.ingest.v1 import ingest_pb2, ingest_pb2_grpc, referral_pb2
from services.common.migrate import migrate
from services.common.referral_shape import COLUMNS_BY_NAME, COPY_COLUMNS, Source
from services.demo_data import synthetic_referrals
from services.ingest.credentials import create_service_credential
from services.ingest.extension import PURE_PYTHON_ENV
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow, format_table

BATCH_SIZE = 1000
BATCH_ROWS = 200_000
PURE_PYTHON_ROWS = 50_000  # HANDOFF_PURE_PYTHON=1: the Python path, beside the C figure
BATCHES_IN_FLIGHT = 12
CONNECTIONS = 16
UNARY_CALLS = 20_000
UNARY_CONCURRENCY = 100
STEADY_RATE = 1000
STEADY_SECONDS = 5.0
AUTH_PAIRS = 5

_COPY_COLUMNS = COPY_COLUMNS
# How the baseline COPY binary-encodes each column, by its SQL type (text as it is).
_BINARY: dict[str, Callable[[str], object]] = {
    "uuid": uuid.UUID,
    "date": lambda text: date.fromisoformat(text) if text else None,
    "inet": lambda text: ip_address(text) if text else None,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _copy_record(message: referral_pb2.Referral) -> tuple[object, ...]:
    """The message's row as asyncpg's COPY wants it, column by column of the shape."""
    record: list[object] = []
    for name in _COPY_COLUMNS:
        column = COLUMNS_BY_NAME[name]
        source = {
            Source.CONSUMER: message.consumer, Source.OPT_IN: message.opt_in,
        }.get(column.source, message)  # fmt: skip
        value = getattr(source, name)
        if name == "opted_in_at":
            record.append(value.ToDatetime(tzinfo=UTC))
        elif name == "extra":
            record.append(dict(value))
        else:
            record.append(_BINARY.get(column.sql_type, str)(value))
    return tuple(record)


@contextmanager
def _ingest_process(
    dsn: str, port: int, workers: int = 1, *, checks: bool = True, pure_python: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **{k: v for k, v in os.environ.items() if k != PURE_PYTHON_ENV},
        **({PURE_PYTHON_ENV: "1"} if pure_python else {}),
        "HANDOFF_UNSAFE_DISABLE_ACCESS_CHECKS": "0" if checks else "1",
        "DATABASE_URL": dsn,
        "HANDOFF_INGEST_PORT": str(port),
        "HANDOFF_INGEST_WORKERS": str(workers),
        "HANDOFF_LOG_LEVEL": "warning",
        "HANDOFF_INGEST_DB_POOL_MAX": "20",
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _wait_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for _ in range(200):
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("ingest service did not become healthy")


async def _closed_loop(
    calls: int, concurrency: int, call: Callable[[int], Awaitable[object]]
) -> float:
    """Run `calls` calls with `concurrency` callers; return calls per second."""
    counter = iter(range(calls))

    async def caller() -> None:
        for index in counter:
            await call(index)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return calls / (time.perf_counter() - start)


async def _open_loop_latencies(
    rate: int, seconds: float, call: Callable[[int], Awaitable[object]]
) -> list[float]:
    """Send at a steady rate regardless of replies; return each acknowledgement latency (ms)."""
    latencies: list[float] = []
    interval = 1.0 / rate
    total = int(rate * seconds)

    async def one(index: int) -> None:
        sent = time.perf_counter()
        await call(index)
        latencies.append((time.perf_counter() - sent) * 1000)

    tasks = []
    start = time.perf_counter()
    for index in range(total):
        delay = start + index * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return latencies


def _percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


async def run(admin_dsn: str) -> list[BenchRow]:
    """Measure everything in a scratch database; return the table rows."""
    async with scratch_database(admin_dsn, "ingest") as dsn:
        return await _measure(dsn)


async def _checkpoint(dsn: str) -> None:
    """Flush what earlier phases wrote (needs a superuser; skipped, with a note, if not)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.exceptions.InsufficientPrivilegeError:
        print("bench: not a superuser, phases run without a CHECKPOINT between them")
    finally:
        await conn.close()


@dataclass(frozen=True)
class BatchRun:
    """One IngestBatch run: its rate, and CPU seconds per referral by process group."""

    rate: float
    ingest_cpu: float
    postgres_cpu: float | None  # None when PostgreSQL runs elsewhere
    client_cpu: float


def _cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:  # gone since it was listed
            continue
        found[pid] = times.user + times.system
    return found


def _postgres_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two readings, counting processes started in between whole."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def _database_is_local(dsn: str) -> bool:
    host = urlsplit(dsn).hostname
    return host in (None, "", "localhost", "127.0.0.1", "::1")


async def _batch_rate(
    dsn: str,
    batches: list[ingest_pb2.IngestBatchRequest],
    workers: int,
    token: str,
    *,
    checks: bool = True,
    pure_python: bool = False,
) -> BatchRun:
    """IngestBatch against an ingest service with `workers` processes, and where its CPU went.

    With `pure_python`, the service runs with HANDOFF_PURE_PYTHON=1: no compiled scanner.
    """
    await _checkpoint(dsn)
    port = _free_port()
    # Separate connections (no shared subchannel), so the kernel spreads them over workers.
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.use_local_subchannel_pool", 1)]
    with _ingest_process(dsn, port, workers, checks=checks, pure_python=pure_python) as proc:
        channels = [
            credential_channel(f"127.0.0.1:{port}", token, options=options)
            for _ in range(CONNECTIONS)
        ]
        try:
            for channel in channels:
                await _wait_serving(channel)
            stubs = [ingest_pb2_grpc.IngestServiceStub(channel) for channel in channels]

            async def send_batch(index: int) -> None:
                reply = await stubs[index % CONNECTIONS].IngestBatch(batches[index])
                assert reply.accepted == len(batches[index].referrals), reply.rejected

            ingest_pids = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(True))]
            local = _database_is_local(dsn)
            ingest_before = _cpu_by_pid(ingest_pids)
            postgres_before = _cpu_by_pid(_postgres_pids()) if local else {}
            client_before = time.process_time()
            rate = BATCH_SIZE * await _closed_loop(len(batches), BATCHES_IN_FLIGHT, send_batch)
            client = time.process_time() - client_before
            ingest = _cpu_delta(ingest_before, _cpu_by_pid(ingest_pids))
            postgres = _cpu_delta(postgres_before, _cpu_by_pid(_postgres_pids())) if local else None
        finally:
            for channel in channels:
                await channel.close()
    count = len(batches) * BATCH_SIZE
    return BatchRun(
        rate, ingest / count, None if postgres is None else postgres / count, client / count
    )


def _cpu_rows(run: BatchRun, label: str) -> list[BenchRow]:
    """Where a batch run's CPU went, per referral (PostgreSQL only when it runs here)."""
    rows = [BenchRow(f"  CPU per referral, ingest ({label})", run.ingest_cpu * 1e6, "us")]
    if run.postgres_cpu is not None:
        rows.append(BenchRow("  CPU per referral, PostgreSQL", run.postgres_cpu * 1e6, "us"))
    rows.append(BenchRow("  CPU per referral, bench client", run.client_cpu * 1e6, "us"))
    return rows


async def _measure(dsn: str) -> list[BenchRow]:
    await migrate(dsn)
    account_id, campaign_id = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(dsn)
    await conn.execute("INSERT INTO accounts (id, name) VALUES ($1, 'bench')", account_id)
    await conn.execute(
        "INSERT INTO campaigns (id, account_id, name) VALUES ($1, $2, 'bench')",
        campaign_id,
        account_id,
    )
    messages = synthetic_referrals(str(account_id), str(campaign_id), BATCH_ROWS, seed=7)

    # Baseline: raw COPY of the same rows into the same table.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + json.dumps(value).encode(),
        decoder=lambda data: json.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )
    records = [_copy_record(m) for m in messages]
    await _checkpoint(dsn)
    start = time.perf_counter()
    await conn.copy_records_to_table("referrals", records=records, columns=_COPY_COLUMNS)
    copy_rate = len(records) / (time.perf_counter() - start)
    await conn.execute("TRUNCATE referrals")
    await conn.execute("VACUUM ANALYZE referrals")
    await conn.close()

    conn = await asyncpg.connect(dsn)
    try:
        _, token = await create_service_credential(
            CredentialStore(conn), "bench", (Role.INGEST,), (), None, datetime.now(UTC)
        )
    finally:
        await conn.close()

    def batches_of(seed: int) -> list[ingest_pb2.IngestBatchRequest]:
        rows = synthetic_referrals(str(account_id), str(campaign_id), BATCH_ROWS, seed=seed)
        return [
            ingest_pb2.IngestBatchRequest(referrals=rows[i : i + BATCH_SIZE])
            for i in range(0, len(rows), BATCH_SIZE)
        ]

    del messages
    one_worker = await _batch_rate(dsn, batches_of(7), 1, token)
    two_workers = await _batch_rate(dsn, batches_of(6), 2, token)
    pure = synthetic_referrals(str(account_id), str(campaign_id), PURE_PYTHON_ROWS, seed=5)
    pure_batches = [
        ingest_pb2.IngestBatchRequest(referrals=pure[i : i + BATCH_SIZE])
        for i in range(0, len(pure), BATCH_SIZE)
    ]
    python_only = await _batch_rate(dsn, pure_batches, 1, token, pure_python=True)

    # The access check's cost: authenticated runs beside runs with the check off,
    # interleaved (the order alternates), so drift in the machine hits both alike.
    def unary_of(seed: int) -> list[ingest_pb2.IngestRequest]:
        count = UNARY_CALLS // 2
        rows = synthetic_referrals(str(account_id), str(campaign_id), count, seed=seed)
        return [ingest_pb2.IngestRequest(referral=m) for m in rows]

    batch_pairs: list[tuple[float, float]] = []
    unary_pairs: list[tuple[float, float]] = []
    for pair in range(AUTH_PAIRS):
        batch, unary_ = {}, {}
        for checks in (True, False) if pair % 2 == 0 else (False, True):
            seed = 100 + 2 * pair + int(checks)
            run_ = await _batch_rate(dsn, batches_of(seed), 1, token, checks=checks)
            batch[checks] = run_.rate
            unary_[checks] = await _unary_rate(dsn, unary_of(seed), token, checks=checks)
        batch_pairs.append((batch[True], batch[False]))
        unary_pairs.append((unary_[True], unary_[False]))
    unary = [
        ingest_pb2.IngestRequest(referral=m)
        for m in synthetic_referrals(str(account_id), str(campaign_id), UNARY_CALLS, seed=8)
    ]
    steady = [
        ingest_pb2.IngestRequest(referral=m)
        for m in synthetic_referrals(
            str(account_id), str(campaign_id), int(STEADY_RATE * STEADY_SECONDS), seed=9
        )
    ]
    await _checkpoint(dsn)
    port = _free_port()
    with _ingest_process(dsn, port) as proc:
        async with credential_channel(
            f"127.0.0.1:{port}", token, options=[("grpc.max_send_message_length", 64 << 20)]
        ) as channel:
            await _wait_serving(channel)
            ingest = ingest_pb2_grpc.IngestServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)

            async def noop(index: int) -> None:
                await health.Check(health_pb2.HealthCheckRequest())

            async def send_one(index: int) -> None:
                await ingest.Ingest(unary[index])

            noop_rate = await _closed_loop(UNARY_CALLS, UNARY_CONCURRENCY, noop)
            unary_rate = await _closed_loop(UNARY_CALLS, UNARY_CONCURRENCY, send_one)

            async def send_steady(index: int) -> None:
                await ingest.Ingest(steady[index])

            noop_latency = await _open_loop_latencies(STEADY_RATE, 2.0, noop)
            latency = await _open_loop_latencies(STEADY_RATE, STEADY_SECONDS, send_steady)
        peak = _peak_rss_mib(proc.pid)
    return [
        BenchRow(
            f"IngestBatch x{BATCH_SIZE}, {BATCHES_IN_FLIGHT} in flight, 1 worker",
            one_worker.rate, "referrals/s", "asyncpg COPY, same rows", copy_rate,
            ">= 50,000/s, aim 0.25x",
        ),
        BenchRow(
            f"IngestBatch x{BATCH_SIZE}, {BATCHES_IN_FLIGHT} in flight, 2 workers",
            two_workers.rate, "referrals/s", "asyncpg COPY, same rows", copy_rate,
            ">= 50,000/s, aim 0.25x",
        ),
        *_cpu_rows(one_worker, "1 worker"),
        BenchRow(
            f"IngestBatch x{BATCH_SIZE}, 1 worker, pure Python", python_only.rate,
            "referrals/s", "the same with the C scanner", one_worker.rate,
        ),
        BenchRow(
            "  CPU per referral, ingest, pure Python", python_only.ingest_cpu * 1e6, "us",
            "the same with the C scanner", one_worker.ingest_cpu * 1e6,
        ),
        BenchRow(
            f"unary Ingest, {UNARY_CONCURRENCY} callers", unary_rate, "referrals/s",
            "no-op unary RPC (health Check)", noop_rate, ">= 0.5x",
        ),
        BenchRow(
            f"Ingest ack p50 at {STEADY_RATE}/s", _percentile(latency, 50), "ms",
            "no-op RPC p50", _percentile(noop_latency, 50),
        ),
        BenchRow(
            f"Ingest ack p99 at {STEADY_RATE}/s", _percentile(latency, 99), "ms",
            "no-op RPC p99", _percentile(noop_latency, 99),
        ),
        BenchRow("ingest server peak RSS", peak, "MiB"),
        *_auth_rows(f"IngestBatch x{BATCH_SIZE}", batch_pairs),
        *_auth_rows(f"unary Ingest, {UNARY_CONCURRENCY} callers", unary_pairs),
    ]  # fmt: skip


async def _unary_rate(
    dsn: str, requests: list[ingest_pb2.IngestRequest], token: str, *, checks: bool
) -> float:
    """Unary Ingest calls per second, UNARY_CONCURRENCY in flight, on a fresh process."""
    await _checkpoint(dsn)
    port = _free_port()
    with _ingest_process(dsn, port, checks=checks):
        async with credential_channel(f"127.0.0.1:{port}", token) as channel:
            await _wait_serving(channel)
            ingest = ingest_pb2_grpc.IngestServiceStub(channel)

            async def send_one(index: int) -> None:
                await ingest.Ingest(requests[index])

            return await _closed_loop(len(requests), UNARY_CONCURRENCY, send_one)


def _auth_rows(name: str, pairs: Sequence[tuple[float, float]]) -> list[BenchRow]:
    """Each authenticated run beside its unchecked twin, then the median cost and spread."""
    rows = [
        BenchRow(
            f"{name}, authenticated (pair {i + 1})", checked, "referrals/s",
            "same, access check off", unchecked, "within spread, <= 5% median cost",
        )
        for i, (checked, unchecked) in enumerate(pairs)
    ]  # fmt: skip
    ratios = sorted(checked / unchecked for checked, unchecked in pairs)
    offs = sorted(unchecked for _, unchecked in pairs)
    median = ratios[len(ratios) // 2]
    spread = (offs[-1] - offs[0]) / offs[len(offs) // 2]
    rows.append(BenchRow("  access check cost, median of pairs", (1 - median) * 100, "%"))
    rows.append(BenchRow("  run-to-run spread, check off (max-min)/median", spread * 100, "%"))
    return rows


if __name__ == "__main__":
    from services.common.localdb import resolve_admin_dsn

    rows = asyncio.run(run(resolve_admin_dsn()))
    print(format_table("ingest", rows))

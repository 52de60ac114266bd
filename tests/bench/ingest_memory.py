"""Ingest's memory under concurrent batches: python -m tests.bench.ingest_memory [N ROWS TEXT].

Starts `python -m services.ingest` on a private PostgreSQL cluster, sends N concurrent
IngestBatch calls of ROWS referrals (each with TEXT characters of free text), and prints
the process's resident memory at rest and at its peak, and the peak's cost per wire byte:
the figures behind COST_PER_WIRE_BYTE and the budget in services/ingest/memory_budget.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from services.common.gen.handoff.ingest.v1 import ingest_pb2
from tests.integration.factories import referral
from tests.integration.private_cluster import PrivateCluster, private_cluster_bin

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def _memory_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _campaign(dsn: str) -> tuple[str, str]:
    async def create() -> tuple[str, str]:
        conn = await asyncpg.connect(dsn)
        account, campaign = uuid.uuid4(), uuid.uuid4()
        await conn.execute("INSERT INTO accounts (id, name) VALUES ($1, 'bench')", account)
        await conn.execute(
            "INSERT INTO campaigns (id, account_id, name) VALUES ($1, $2, 'bench')",
            campaign,
            account,
        )
        await conn.close()
        return str(account), str(campaign)

    return asyncio.run(create())


async def _send(port: int, requests: list[bytes]) -> dict[str, int]:
    codes: dict[str, int] = {}
    options = [("grpc.max_send_message_length", 1 << 30)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call: Any = channel.unary_unary("/handoff.ingest.v1.IngestService/IngestBatch")

        async def one(request: bytes) -> str:
            try:
                await call(request, timeout=300)
            except grpc.aio.AioRpcError as error:
                return error.code().name
            return "OK"

        for code in await asyncio.gather(*(one(r) for r in requests)):
            codes[code] = codes.get(code, 0) + 1
    return codes


def _measure(cluster: PrivateCluster, concurrency: int, rows: int, text: int) -> str:
    account, campaign = _campaign(cluster.dsn)
    extra = {"note": "x" * text} if text else None
    requests = [
        ingest_pb2.IngestBatchRequest(
            referrals=[referral(account, campaign, f"b{c}-{i}", extra=extra) for i in range(rows)]
        ).SerializeToString()
        for c in range(concurrency)
    ]
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": cluster.dsn,
        "HANDOFF_INGEST_PORT": str(port),
        "HANDOFF_UNSAFE_DISABLE_ACCESS_CHECKS": "1",  # loopback only
        "HANDOFF_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "services.ingest"]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as server:
        try:
            assert server.stdout is not None
            server.stdout.readline()  # "ingest gRPC listening on …"
            time.sleep(1.0)
            rest = _memory_mib(server.pid, "VmRSS")
            codes = asyncio.run(_send(port, requests))
            peak = _memory_mib(server.pid, "VmHWM")
        finally:
            server.terminate()
    wire = len(requests[0]) / MIB
    per_byte = (peak - rest) / (concurrency * wire)
    answers = ", ".join(f"{n} {code}" for code, n in sorted(codes.items()))
    return (
        f"{concurrency} x {rows} rows ({wire:.1f} MiB each): at rest {rest:.0f} MiB, "
        f"peak {peak:.0f} MiB, {per_byte:.2f} bytes per wire byte; {answers}"
    )


def main() -> int:
    """Measure once with the command line's figures (default: 8 batches of 10,000 rows)."""
    concurrency, rows, text = (int(a) for a in (sys.argv[1:] or ["8", "10000", "0"]))
    bin_dir = private_cluster_bin()
    if bin_dir is None:
        print("no PostgreSQL binaries (initdb, pg_ctl) for a private cluster", file=sys.stderr)
        return 1
    cluster = PrivateCluster(bin_dir)
    try:
        cluster.create()
        print(_measure(cluster, concurrency, rows, text))
    finally:
        cluster.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())

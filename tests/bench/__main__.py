"""make bench: every benchmark, each figure beside its raw baseline from the same run."""

from __future__ import annotations

import asyncio
import sys

from services.common.localdb import resolve_admin_dsn
from tests.bench import ingest
from tests.bench.table import format_table


def main() -> int:
    """Run the benchmarks named on the command line (default: all) and print tables."""
    wanted = set(sys.argv[1:]) or {"ingest", "render", "delivery", "channels", "live"}
    dsn = resolve_admin_dsn()
    if "ingest" in wanted:
        print(format_table("ingest (gRPC -> PostgreSQL)", asyncio.run(ingest.run(dsn))), flush=True)
    if "render" in wanted:
        try:
            from tests.bench import render
        except ImportError:
            print("render: benchmark not available yet", flush=True)
        else:
            print(format_table("render (PostgreSQL -> CSV)", asyncio.run(render.run(dsn))))
    if "delivery" in wanted:
        from tests.bench import delivery

        table = format_table("delivery (PostgreSQL -> SFTP)", asyncio.run(delivery.run(dsn)))
        print(table, flush=True)
    wanted = set(sys.argv[1:]) or {"ingest", "render", "delivery", "channels", "live"}
    return 0


if __name__ == "__main__":
    sys.exit(main())

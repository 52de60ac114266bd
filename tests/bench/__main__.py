"""make bench: every benchmark, each figure beside its raw baseline from the same run."""

from __future__ import annotations

import asyncio
import importlib
import sys

from services.common.localdb import resolve_admin_dsn
from tests.bench.table import format_table

# Every benchmark module (tests/bench/<name>.py, with `async def run(dsn)`) and its title,
# in the order `make bench` runs them; `python -m tests.bench NAME...` runs some.
BENCHES = {
    "ingest": "ingest (gRPC -> PostgreSQL)",
    "render": "render (PostgreSQL -> CSV)",
    "delivery": "delivery (PostgreSQL -> SFTP)",
    "channels": "delivery (PostgreSQL -> FTPS, email)",
    "live": "live (PostgreSQL -> API)",
    "export": "export (PostgreSQL -> HTTP)",
    "export_render": "export rendering (PostgreSQL's CSV renderer and Python's)",
    "audiences": "audiences (HTTP upload -> PostgreSQL)",
    "mailchimp": "Mailchimp (PostgreSQL -> Mailchimp batch API, fake)",
    "audience_pull": "audience pull (SFTP folder -> PostgreSQL)",
    "targeting": "audience targeting (suppression in a scheduled delivery)",
}


def main() -> int:
    """Run the benchmarks named on the command line (default: all) and print tables."""
    wanted = sys.argv[1:] or list(BENCHES)
    unknown = [name for name in wanted if name not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
        return 2
    dsn = resolve_admin_dsn()
    for name in wanted:
        module = importlib.import_module(f"tests.bench.{name}")
        print(format_table(BENCHES[name], asyncio.run(module.run(dsn))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

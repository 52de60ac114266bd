"""Starts the whole system with one command: python -m services.run [--demo] [--migrate-only].

The database is DATABASE_URL, or (when unset) database `handoff` on a local PostgreSQL
started with pgserver under $HANDOFF_HOME. Migrations are applied, then the four services
run as child processes until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from services.common.auth.model import Role
from services.common.config import ConfigError, env_float
from services.common.localdb import DEFAULT_HOME
from services.common.migrate import migrate
from services.launcher.credential import (
    SCHEDULER_TOKEN_FILE,
    LocalCredential,
    credential_hint,
    ensure_local_credential,
    local_service_env,
)
from services.launcher.database import (
    ChosenDatabase,
    DatabaseUnavailableError,
    choose_database,
    redact_dsn,
)
from services.launcher.demo import DEMO_COUNT, DemoError, demo_report, load_demo
from services.launcher.plan import ServicePlan, plan_services
from services.launcher.ports import clash_report, find_clashes
from services.launcher.system import SystemOptions, run_system

ENVIRONMENT_HELP = """\
environment:
  DATABASE_URL        the PostgreSQL to migrate and serve from; unset: database `handoff`
                      on a local PostgreSQL (pgserver) started under $HANDOFF_HOME, which
                      keeps running after Ctrl-C so the next start is instant
  HANDOFF_HOME        where that PostgreSQL keeps its data (pgdata/) and binaries (pylib/);
                      default /var/tmp/handoff
  HANDOFF_<SERVICE>_PORT, HANDOFF_EXPORT_HTTP_PORT
                      where each service listens (INGEST 50051, SCHEDULER 50052,
                      DELIVERY 50053, EXPORT 50054, export HTTP 8080); every port is
                      checked free before anything starts
  HANDOFF_LOG_FORMAT  json (default) or text

exit status:
  0 stopped by Ctrl-C or SIGTERM, or a service stopped cleanly on its own
  1 could not start (database, a port in use, a service failing at start-up)
  2 configuration error
  N the exit code of the service that stopped on its own (128+S when killed by signal S);
    the launcher then stops the other services too (it does not restart them)

More in docs/operations.md.
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of `python -m services.run`."""
    parser = argparse.ArgumentParser(
        prog="python -m services.run",
        description="Migrate the database and run the four Handoff services until Ctrl-C.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=ENVIRONMENT_HELP,
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="after startup, create a demo account and campaign and ingest referrals",
    )
    parser.add_argument(
        "--demo-count",
        type=int,
        default=DEMO_COUNT,
        metavar="N",
        help=f"how many synthetic referrals --demo ingests (default {DEMO_COUNT})",
    )
    parser.add_argument("--migrate-only", action="store_true", help="apply the migrations and exit")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long each service may take to report SERVING (default 30)",
    )
    args = parser.parse_args(argv)
    if args.demo_count < 1:
        parser.error("--demo-count must be at least 1")
    if args.start_timeout <= 0:
        parser.error("--start-timeout must be above 0")
    return args


async def _prepare_database() -> ChosenDatabase:
    database = await choose_database(os.environ)
    shown = redact_dsn(database.dsn)
    try:
        applied = await migrate(database.dsn)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailableError(f"cannot migrate {shown}: {exc}") from exc
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
    print(f"run: database {shown} ({database.origin})", flush=True)
    print(f"run: migrations: {names or 'schema up to date'}", flush=True)
    return database


def _psql_argument(database: ChosenDatabase) -> str:
    """How the demo's psql one-liner names the database without printing a password."""
    if database.origin == "DATABASE_URL":
        return '"$DATABASE_URL"'
    return shlex.quote(redact_dsn(database.dsn))


class PortsTakenError(RuntimeError):
    """A port the services need is taken; the message names each one and its holder."""


def _check_ports_free(plans: Sequence[ServicePlan]) -> None:
    """Refuse before anything starts when another process holds a port we need."""
    clashes = find_clashes(listener for plan in plans for listener in plan.listeners())
    if clashes:
        raise PortsTakenError(clash_report(clashes))


@dataclass(frozen=True)
class Prepared:
    """What the start-up steps produced for the services and for the messages."""

    database: ChosenDatabase
    service_env: Mapping[str, str]  # the environment every service starts with
    credential: LocalCredential | None  # None with --migrate-only


async def _start_up(args: argparse.Namespace, plans: Sequence[ServicePlan]) -> Prepared:
    """Everything before the services start, in order; each step refuses with a message."""
    if not args.migrate_only:
        # First: a second `make run` must not even touch the database of the first.
        _check_ports_free(plans)
    database = await _prepare_database()
    service_env = {**os.environ, "DATABASE_URL": database.dsn}
    if args.migrate_only:
        return Prepared(database=database, service_env=service_env, credential=None)
    home = Path(os.environ.get("HANDOFF_HOME", DEFAULT_HOME))
    try:
        credential = await ensure_local_credential(database.dsn, home)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailableError(f"cannot make the local operator credential: {exc}") from exc
    ingest = next(p for p in plans if p.name == "ingest")
    print(credential_hint(credential, ingest.grpc_target), flush=True)
    delivery = next(p for p in plans if p.name == "delivery")
    try:
        scheduler_credential = await ensure_local_credential(
            database.dsn, home, file=SCHEDULER_TOKEN_FILE, name="local scheduler (make run)",
            roles=(Role.SCHEDULER,),
        )  # fmt: skip
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailableError(f"cannot make the scheduler's credential: {exc}") from exc
    local = local_service_env(home, dict(os.environ))
    for name, value in (
        ("HANDOFF_SCHEDULER_TOKEN", scheduler_credential.token),
        ("HANDOFF_SCHEDULER_DELIVERY_TARGET", delivery.grpc_target),
    ):
        if not os.environ.get(name):  # what the caller set wins
            local[name] = value
    if "HANDOFF_EGRESS_ALLOW" in local:
        print(f"run: egress allowed to {local['HANDOFF_EGRESS_ALLOW']} (local SFTP servers)")
    service_env = {**service_env, **local}
    return Prepared(database=database, service_env=service_env, credential=credential)


def _say_database_keeps_running(database: ChosenDatabase) -> None:
    folder = parse_qs(urlsplit(database.dsn).query).get("host", [""])[0]
    if database.origin != "DATABASE_URL" and folder:
        # Kept on purpose (the next start is instant), but say so: nothing else would.
        stop = f"kill -INT $(head -1 {shlex.quote(folder + '/postmaster.pid')})"
        print(
            f"run: the local PostgreSQL keeps running for the next start (a Unix socket in "
            f"{folder}, no TCP port); to stop it: {stop}",
            flush=True,
        )


async def _run(args: argparse.Namespace, plans: Sequence[ServicePlan], grace_s: float) -> int:
    prepared = await _start_up(args, plans)
    database, credential = prepared.database, prepared.credential
    if credential is None:  # --migrate-only
        return 0
    ingest = next(p for p in plans if p.name == "ingest")

    async def demo() -> None:
        print(f"demo: ingesting {args.demo_count} synthetic referrals …", flush=True)
        try:
            outcome = await load_demo(ingest.grpc_target, credential.token, args.demo_count)
        except DemoError as exc:
            print(f"demo: failed: {exc} (the services keep running)", file=sys.stderr, flush=True)
            return
        print(demo_report(outcome, _psql_argument(database)), flush=True)

    options = SystemOptions(
        env=prepared.service_env,
        database_shown=f"{redact_dsn(database.dsn)} ({database.origin})",
        start_timeout_s=args.start_timeout,
        grace_s=grace_s,
    )
    code = await run_system(plans, options, after_start=demo if args.demo else None)
    _say_database_keeps_running(database)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit code is 0 only when everything started and stopped cleanly."""
    args = parse_args(argv)
    try:
        plans = plan_services(os.environ)
        grace_s = env_float(os.environ, "HANDOFF_SHUTDOWN_GRACE_S", 10.0)
    except ConfigError as exc:
        print(f"run: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, plans, grace_s))
    except DatabaseUnavailableError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 1
    except PortsTakenError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("run: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Bootstrap credentials straight in the database: python -m services.credentials.

For the first operator credential of a new deployment (every API call needs one, so the
API cannot make the first), and for break-glass revocation. Prints only the token on
stdout, so it can go straight into a secret:

    python -m services.credentials create --name ops --role operator | \\
        kubectl create secret generic handoff-operator --from-file=token=/dev/stdin
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from services.common.auth.model import Role
from services.common.auth.store import CredentialStore
from services.common.config import DEFAULT_DATABASE_URL
from services.common.errors import HandoffError
from services.ingest.credentials import create_service_credential, revoke_credential


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m services.credentials",
        description="Create or revoke service credentials in DATABASE_URL's database.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a service credential; print its token")
    create.add_argument("--name", required=True, help="a label for people")
    create.add_argument(
        "--role", action="append", required=True, choices=[r.value for r in Role],
        help="a role to hold (repeat for several)",
    )  # fmt: skip
    create.add_argument(
        "--ingest-account", action="append", default=[], metavar="ACCOUNT_ID",
        help="with --role ingest: an account it may ingest for (default: every account)",
    )  # fmt: skip
    create.add_argument("--expires-in-days", type=int, default=0, help="0: never expires")
    revoke = commands.add_parser("revoke", help="revoke a credential by id")
    revoke.add_argument("id")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace, dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        store = CredentialStore(conn)
        now = datetime.now(UTC)
        if args.command == "revoke":
            revoked = await revoke_credential(store, args.id)
            return f"revoked {revoked.id}"
        expires = now + timedelta(days=args.expires_in_days) if args.expires_in_days else None
        roles = [Role(r) for r in args.role]
        stored, token = await create_service_credential(
            store, args.name, roles, args.ingest_account, expires, now
        )
        print(f"credentials: created {stored.id} ({', '.join(args.role)})", file=sys.stderr)
        return token
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 1 when the request or the database said no."""
    args = parse_args(argv)
    dsn = os.environ.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    try:
        print(asyncio.run(_run(args, dsn)))
    except HandoffError as exc:
        print(f"credentials: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"credentials: database error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DSN handling of `make run`: passwords never shown, another database on the same server."""

from __future__ import annotations

import pytest

from services.launcher.database import redact_dsn, with_database


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:s3cret@db.example.com:5432/handoff",
         "postgresql://app:***@db.example.com:5432/handoff"),
        ("postgresql://postgres:@/handoff?host=/var/tmp/handoff/pgdata",
         "postgresql://postgres@/handoff?host=/var/tmp/handoff/pgdata"),
        ("postgresql://postgres@127.0.0.1:5432/postgres",
         "postgresql://postgres@127.0.0.1:5432/postgres"),
        ("postgresql://app:p%40ss@[::1]:5432/handoff?sslmode=require",
         "postgresql://app:***@[::1]:5432/handoff?sslmode=require"),
    ],
)  # fmt: skip
def test_redact_dsn_hides_the_password_only(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown


def test_with_database_keeps_server_and_options() -> None:
    admin = "postgresql://postgres:@/postgres?host=/var/tmp/handoff/pgdata"

    assert with_database(admin, "handoff") == (
        "postgresql://postgres:@/handoff?host=/var/tmp/handoff/pgdata"
    )

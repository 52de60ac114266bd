"""DSN handling of `make run`: passwords never shown, another database on the same server."""

from __future__ import annotations

import pwd
import sys
from pathlib import Path

import pytest

from services.launcher.database import (
    DatabaseUnavailableError,
    pgserver_as_root_note,
    redact_dsn,
    use_private_pgserver,
    with_database,
)


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


def test_pgserver_is_taken_from_handoff_home_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "pgserver", raising=False)
    package = tmp_path / "pylib" / "pgserver"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""stand-in"""\n')

    assert use_private_pgserver(tmp_path) == package.resolve()
    assert sys.path[0] == str((tmp_path / "pylib").resolve())


def test_pgserver_missing_from_handoff_home_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "pgserver", raising=False)
    (tmp_path / "pylib").mkdir()

    # Refused whether or not another copy (say, one under /root) is importable.
    with pytest.raises(DatabaseUnavailableError, match="pgserver"):
        use_private_pgserver(tmp_path)


def test_root_is_told_once_about_the_pgserver_user_and_folder_permissions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_such_user(name: str) -> object:
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", no_such_user)
    note = pgserver_as_root_note(tmp_path, euid=0)
    assert "creates the system user `pgserver`" in note
    assert str(tmp_path / "pgdata") in note
    assert pgserver_as_root_note(tmp_path, euid=1000) == ""

    monkeypatch.setattr(pwd, "getpwnam", lambda name: object())
    assert pgserver_as_root_note(tmp_path, euid=0) == ""  # made before: nothing new

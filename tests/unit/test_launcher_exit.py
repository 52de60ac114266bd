"""What `make run` says and answers when a service stops on its own, and how services report."""

from __future__ import annotations

import signal

import pytest

from services.common.service import announcement, parse_announcement
from services.launcher.plan import ServicePlan, summary
from services.launcher.system import describe_exit, exit_code_for


@pytest.mark.parametrize(
    ("returncode", "exit_code", "words"),
    [
        (0, 0, "stopped on its own with exit code 0"),
        (1, 1, "exited with code 1"),
        (2, 2, "exited with code 2"),
        (-signal.SIGKILL, 137, "was killed by SIGKILL"),
        (-signal.SIGSEGV, 139, "was killed by SIGSEGV"),
    ],
)
def test_the_launcher_answers_with_the_code_of_the_service_that_stopped(
    returncode: int, exit_code: int, words: str
) -> None:
    assert exit_code_for(returncode) == exit_code
    assert words in describe_exit(returncode)


def test_an_announcement_names_service_kind_and_port() -> None:
    line = announcement("export", "HTTP", "0.0.0.0", 8080)

    assert line == "export HTTP listening on 0.0.0.0:8080"
    assert parse_announcement(line) == ("export", "HTTP", 8080)
    assert parse_announcement(announcement("ingest", "gRPC", "::", 50051)) == (
        "ingest",
        "gRPC",
        50051,
    )
    assert parse_announcement("ingest gRPC listening") is None


def test_summary_shows_each_services_pid() -> None:
    plans = [ServicePlan("ingest", "127.0.0.1", 50051)]

    assert "pid 4242" in summary(plans, "db", {"ingest": 4242})
    assert "pid" not in summary(plans, "db")

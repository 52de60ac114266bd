"""`make run` refuses up front when a port it needs is taken, and names who holds it."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import pytest

from services.launcher.plan import plan_services
from services.launcher.ports import (
    Listener,
    PortClash,
    bind_problem,
    clash_report,
    describe_holder,
    find_clashes,
    listening_inodes,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:C383 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4711 1 0
   1: 0100007F:C383 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4712 1 0
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4713 1 0
"""


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port this test process listens on."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield squatter.getsockname()[1]


def test_listening_inodes_keeps_only_listeners_on_that_port() -> None:
    assert listening_inodes(TABLE, 50051) == {"4711"}  # 0xC383; the connected one is not
    assert listening_inodes(TABLE, 8080) == {"4713"}
    assert listening_inodes(TABLE, 9) == set()


def test_a_listening_port_is_not_free_and_its_holder_is_named(held_port: int) -> None:
    assert bind_problem("127.0.0.1", held_port) == "the port is already in use"
    assert f"pid {os.getpid()} (" in describe_holder(held_port)


def test_a_free_port_is_free() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert bind_problem("127.0.0.1", port) == ""
    assert describe_holder(port) == ""


def test_a_wildcard_listener_clashes_with_a_loopback_holder(held_port: int) -> None:
    assert bind_problem("0.0.0.0", held_port) == "the port is already in use"


def test_a_taken_port_is_reported_with_its_holder_and_variable(held_port: int) -> None:
    plans = plan_services({"HANDOFF_SCHEDULER_PORT": str(held_port)})
    scheduler = next(plan for plan in plans if plan.name == "scheduler")

    clashes = find_clashes(scheduler.listeners())

    assert len(clashes) == 1
    text = clashes[0].describe()
    assert f"scheduler gRPC cannot listen on 127.0.0.1:{held_port}" in text
    assert f"pid {os.getpid()}" in text
    assert "HANDOFF_SCHEDULER_PORT=<port>" in text


def test_the_plan_names_the_variable_of_every_listener() -> None:
    listeners = [x for plan in plan_services({}) for x in plan.listeners()]

    assert [(x.service, x.kind, x.port, x.variable) for x in listeners] == [
        ("ingest", "gRPC", 50051, "HANDOFF_INGEST_PORT"),
        ("scheduler", "gRPC", 50052, "HANDOFF_SCHEDULER_PORT"),
        ("delivery", "gRPC", 50053, "HANDOFF_DELIVERY_PORT"),
        ("export", "gRPC", 50054, "HANDOFF_EXPORT_PORT"),
        ("export", "HTTP", 8080, "HANDOFF_EXPORT_HTTP_PORT"),
    ]


def test_the_report_says_when_the_holder_looks_like_another_handoff() -> None:
    listener = Listener("ingest", "gRPC", "127.0.0.1", 50051, "HANDOFF_INGEST_PORT")
    ours = PortClash(listener, "the port is already in use", "pid 7 (python3 -m services.ingest)")
    theirs = PortClash(listener, "the port is already in use", "pid 8 (nginx)")
    unknown = PortClash(listener, "the port is already in use", "")

    assert "is `make run` already running?" in clash_report([ours])
    assert "already running" not in clash_report([theirs])
    assert "in use. Stop that process" in unknown.describe()  # no holder: nothing invented


def test_an_address_this_host_does_not_have_is_named_as_the_problem() -> None:
    assert bind_problem("192.0.2.1", 50051) == "Cannot assign requested address"  # TEST-NET-1

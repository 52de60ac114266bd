"""Where `make run` expects each service, read from the same variables the services read."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.launcher.plan import ServicePlan, plan_services, summary
from services.launcher.probes import client_host, grpc_target, http_url


def test_default_plan_uses_the_documented_ports() -> None:
    plans = plan_services({})

    assert [(p.name, p.port) for p in plans] == [
        ("ingest", 50051),
        ("scheduler", 50052),
        ("delivery", 50053),
        ("export", 50054),
    ]
    assert plans[-1].http_url == "http://127.0.0.1:8080"
    assert all(p.module == f"services.{p.name}" for p in plans)


def test_plan_follows_the_service_variables() -> None:
    plans = plan_services(
        {
            "HANDOFF_INGEST_PORT": "6001",
            "HANDOFF_EXPORT_HOST": "0.0.0.0",
            "HANDOFF_EXPORT_HTTP_PORT": "6080",
        }
    )

    assert plans[0].grpc_target == "127.0.0.1:6001"
    assert plans[-1].grpc_target == "127.0.0.1:50054"  # wildcard reached over loopback
    assert plans[-1].http_url == "http://127.0.0.1:6080"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"HANDOFF_DELIVERY_PORT": "0"}, "HANDOFF_DELIVERY_PORT must be a fixed port"),
        ({"HANDOFF_EXPORT_HTTP_PORT": "0"}, "HANDOFF_EXPORT_HTTP_PORT must be a fixed port"),
        ({"HANDOFF_SCHEDULER_PORT": "50051"}, "two services would listen on the same port"),
        ({"HANDOFF_INGEST_PORT": "grpc"}, "HANDOFF_INGEST_PORT must be an integer"),
    ],
)
def test_unusable_ports_are_refused_before_anything_starts(
    variables: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_services(variables)


def test_summary_lists_every_address_and_the_database() -> None:
    plans = [
        ServicePlan("ingest", "127.0.0.1", 50051),
        ServicePlan("export", "127.0.0.1", 50054, http_host="127.0.0.1", http_port=8080),
    ]

    text = summary(plans, "postgresql://app:***@db/handoff (DATABASE_URL)")

    assert "ingest     gRPC 127.0.0.1:50051" in text
    assert "HTTP http://127.0.0.1:8080" in text
    assert "postgresql://app:***@db/handoff (DATABASE_URL)" in text
    assert text.endswith("Press Ctrl-C to stop.")


@pytest.mark.parametrize(
    ("host", "local"),
    [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("", "127.0.0.1"), ("10.1.2.3", "10.1.2.3")],
)
def test_client_host_reaches_wildcards_over_loopback(host: str, local: str) -> None:
    assert client_host(host) == local


def test_ipv6_addresses_are_bracketed() -> None:
    assert grpc_target("::", 50051) == "[::1]:50051"
    assert http_url("::1", 8080) == "http://[::1]:8080"

"""The egress policy: internal ranges refused by default, allow-listed ranges admitted."""

from __future__ import annotations

import ipaddress

import pytest

from services.common.config import ConfigError
from services.common.egress import EgressPolicy, EgressRefusedError, ResolutionError, refusal


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "not a unicast"),
        ("224.0.0.1", "not a unicast"),
        ("192.0.2.10", "documentation"),
    ],
)
def test_internal_addresses_are_refused_by_default(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "100.128.0.1"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


async def test_an_allow_listed_range_is_admitted_and_others_still_refused() -> None:
    policy = EgressPolicy.from_env({"HANDOFF_EGRESS_ALLOW": "127.0.0.0/8, ::1/128"})
    assert await policy.resolve("127.0.0.1", 22) == [ipaddress.ip_address("127.0.0.1")]
    assert ipaddress.ip_address("127.0.0.1") in await policy.resolve("localhost", 22)
    with pytest.raises(EgressRefusedError, match=r"10\.0\.0\.1, a private address"):
        await policy.resolve("10.0.0.1", 22)
    with pytest.raises(EgressRefusedError, match="HANDOFF_EGRESS_ALLOW"):
        await EgressPolicy().resolve("localhost", 22)


async def test_a_name_that_does_not_resolve_is_a_resolution_error() -> None:
    with pytest.raises(ResolutionError, match="does not resolve"):
        await EgressPolicy().resolve("no-such-host.invalid", 22)


def test_a_bad_range_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="not a CIDR"):
        EgressPolicy.from_env({"HANDOFF_EGRESS_ALLOW": "10.0.0.0/33"})

"""The one egress policy every outbound connection passes (SFTP, FTPS, SMTP, webhooks, vendors).

A destination's name is resolved here and every address it resolves to is checked; the
transport then connects to the checked address, never to the name again, so a DNS answer
that changes between check and connect (rebinding) cannot slip an internal address past.
Refused unless an operator allow-lists a range (HANDOFF_EGRESS_ALLOW, comma-separated
CIDRs; tests allow 127.0.0.0/8): loopback, private (RFC 1918, ULA), link-local, CGNAT
(100.64.0.0/10), cloud metadata (169.254.169.254, fd00:ec2::254), multicast, unspecified,
reserved and the documentation ranges.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common.config import ConfigError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
_DOCUMENTATION = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


class EgressRefusedError(Exception):
    """The destination may not be reached; the message names the host and the reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ResolutionError(Exception):
    """The name does not resolve (a diagnosis, and retryable: DNS can come back)."""


def refusal(address: Address) -> str | None:
    """Why `address` is refused by default, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a carrier-grade NAT (shared) address"
    if any(address in net for net in _DOCUMENTATION):
        return "a documentation address"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast public address"
    if address.is_private:
        return "a private address"
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """Which destinations outbound connections may reach."""

    allowed: tuple[Network, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EgressPolicy:
        """Read HANDOFF_EGRESS_ALLOW: CIDR ranges exempt from the default refusals."""
        env = os.environ if env is None else env
        raw = env.get("HANDOFF_EGRESS_ALLOW", "").strip()
        networks: list[Network] = []
        for part in filter(None, (p.strip() for p in raw.split(","))):
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError as exc:
                raise ConfigError(f"HANDOFF_EGRESS_ALLOW: {part!r} is not a CIDR range") from exc
        return cls(tuple(networks))

    def check(self, host: str, address: Address) -> None:
        """Raise EgressRefusedError unless `address` (resolved from `host`) may be reached."""
        if any(address in net for net in self.allowed):
            return
        why = refusal(address)
        if why is not None:
            raise EgressRefusedError(
                f"{host} resolves to {address}, {why}; an operator can allow its range "
                "with HANDOFF_EGRESS_ALLOW"
            )

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address of `host`, each checked; EgressRefusedError when any is refused
        (a name that mixes public and internal addresses is refused whole)."""
        try:
            literal: Address | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            found: Sequence[Address] = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise ResolutionError(f"{host} does not resolve: {exc.strerror}") from exc
            found = list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))
        for address in found:
            self.check(host, address)
        return list(found)

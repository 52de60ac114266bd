"""Who the client is behind trusted proxies: RFC 7239 `Forwarded` or `X-Forwarded-*`.

Only a TCP peer inside the trusted networks is believed. The chain is walked from the
right (the nearest proxy) and trusted hops are skipped: the first address that is not
trusted is the client, and the proto and host that hop reported are the client's.
Anything malformed makes the whole answer None, so the caller keeps the peer as it is.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR = re.compile(rf'\s*({_TCHARS})\s*=\s*({_TCHARS}|"(?:[^"\\]|\\.)*")\s*')
_QUOTED_PAIR = re.compile(r"\\(.)")
# RFC 7239 section 6: an obfuscated identifier, or "unknown".
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+|unknown", re.IGNORECASE)
_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")
_HOST = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?")
MAX_PORT = 65535
MAX_HOST_LENGTH = 255
MAX_HOPS = 64  # a longer chain is not from a proxy we would run


@dataclass(frozen=True)
class ClientView:
    """The client as the trusted proxies report it (None: keep the peer's value)."""

    remote: str  # an IP address, or an obfuscated identifier such as "_hidden"
    scheme: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class _Hop:
    node: str  # as it will be reported: a bare IP or an identifier
    address: IpAddress | None  # None for an obfuscated identifier
    proto: str | None
    host: str | None


class TrustedProxies:
    """The networks whose forwarding headers are believed (empty: none)."""

    def __init__(self, networks: Iterable[IpNetwork] = ()) -> None:
        self.networks: tuple[IpNetwork, ...] = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """From comma-separated IPs and CIDRs; raises ValueError naming a bad entry."""
        networks = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or CIDR range") from exc
        return cls(networks)

    def trusts(self, address: IpAddress | None) -> bool:
        """Whether `address` is one of our proxies (an identifier never is)."""
        if address is None:
            return False
        return any(address in network for network in self.networks)

    def resolve(
        self,
        peer: str | None,
        forwarded: Sequence[str],
        x_forwarded_for: Sequence[str],
        x_forwarded_proto: Sequence[str],
        x_forwarded_host: Sequence[str],
    ) -> ClientView | None:
        """The client behind `peer`, or None when the peer is not trusted, nothing was
        forwarded, or what was forwarded is malformed."""
        if not self.networks or not self.trusts(parse_ip(peer or "")):
            return None
        if forwarded:
            hops = _forwarded_hops(forwarded)
        elif x_forwarded_for:
            hops = _x_forwarded_hops(x_forwarded_for, x_forwarded_proto, x_forwarded_host)
        else:
            return None
        if not hops:
            return None
        chosen = hops[0]  # every hop trusted: the farthest one is all we know
        for hop in reversed(hops):
            if not self.trusts(hop.address):
                chosen = hop
                break
        return ClientView(chosen.node, chosen.proto, chosen.host)


def parse_ip(text: str) -> IpAddress | None:
    """An IP address (IPv4-mapped IPv6 as IPv4, zone dropped), or None."""
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _node(text: str) -> tuple[str, IpAddress | None] | None:
    """A `for` node (RFC 7239 section 6): IPv4, "[IPv6]", either with a port, or an
    obfuscated identifier. Bare IPv6 is accepted too (X-Forwarded-For writes it so)."""
    text = text.strip()
    if _OBFUSCATED.fullmatch(text):
        return text, None
    if text.startswith("["):
        inside, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and _PORT.fullmatch(port[1:]))):
            return None
        address = parse_ip(inside)
        return None if address is None or address.version != 6 else (str(address), address)
    address = parse_ip(text)
    if address is None and text.count(":") == 1:  # IPv4 with a port
        ip, _, port = text.partition(":")
        address = parse_ip(ip) if _PORT.fullmatch(port) else None
    return None if address is None else (str(address), address)


def _proto(text: str | None) -> str | None:
    if text is None:
        return None
    scheme = text.strip().lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unknown proto {text!r}")
    return scheme


def _host(text: str | None) -> str | None:
    if text is None:
        return None
    host = text.strip()
    match = _HOST.fullmatch(host) if len(host) <= MAX_HOST_LENGTH else None
    # What the request's URL is built from: a bad port or IPv6 would fail there (a 500).
    if (
        match is None
        or (match.group(1) is not None and _ip_version(match.group(1)) != 6)
        or (match.group(2) is not None and int(match.group(2)) > MAX_PORT)
    ):
        raise ValueError(f"malformed host {text!r}")
    return host


def _ip_version(text: str) -> int | None:
    address = parse_ip(text)
    return None if address is None else address.version


def _elements(values: Sequence[str]) -> list[dict[str, str]] | None:
    """RFC 7239 elements (pairs split by ";", elements by ","), names lower-cased."""
    text = ",".join(values)
    elements: list[dict[str, str]] = [{}]
    position = 0
    while position < len(text):
        if text[position] in " \t":
            position += 1
            continue
        if text[position] == ",":
            elements.append({})
            position += 1
            continue
        if text[position] == ";":
            position += 1
            continue
        match = _PAIR.match(text, position)
        if match is None:
            return None
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
        if name in elements[-1]:
            return None  # a parameter twice in one element (RFC 7239 section 4)
        elements[-1][name] = value
        position = match.end()
    # Empty elements (",,") carry nothing; RFC 7230 list syntax allows them.
    return [element for element in elements if element]


def _forwarded_hops(values: Sequence[str]) -> list[_Hop] | None:
    elements = _elements(values)
    if elements is None or len(elements) > MAX_HOPS:
        return None
    hops = []
    try:
        for element in elements:
            node = _node(element["for"]) if "for" in element else None
            if node is None:
                return None  # an element without a usable "for" breaks the chain
            hops.append(_Hop(*node, _proto(element.get("proto")), _host(element.get("host"))))
    except ValueError:
        return None
    return hops


def _split(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _x_forwarded_hops(
    fors: Sequence[str], protos: Sequence[str], hosts: Sequence[str]
) -> list[_Hop] | None:
    addresses, proto_list, host_list = _split(fors), _split(protos), _split(hosts)
    if len(addresses) > MAX_HOPS:
        return None

    def aligned(values: list[str], from_right: int) -> str | None:
        # Proxies that append give one value per hop; one that overwrites gives one value.
        if not values:
            return None
        return values[max(len(values) - 1 - from_right, 0)]

    hops = []
    try:
        for index, text in enumerate(addresses):
            node = _node(text)
            if node is None:
                return None
            from_right = len(addresses) - 1 - index
            proto, host = aligned(proto_list, from_right), aligned(host_list, from_right)
            hops.append(_Hop(*node, _proto(proto), _host(host)))
    except ValueError:
        return None
    return hops

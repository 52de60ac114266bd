"""A credential over plaintext from another host is refused before it is looked up,
unless TLS is terminated upstream; from this machine it is accepted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.common.auth import tokens
from services.common.auth.grpc_access import AccessInterceptor
from services.common.auth.model import AccessRule, CredentialKind, Role
from services.common.auth.store import StoredCredential
from services.common.auth.verify import Authenticator
from services.common.errors import UnauthenticatedError

MINTED = tokens.mint(CredentialKind.SERVICE, uuid.uuid4())
RULE = AccessRule(roles=frozenset({Role.OPERATOR}))


class _Store:
    def __init__(self) -> None:
        self.lookups = 0

    async def lookup(self, credential_id: uuid.UUID) -> StoredCredential:
        self.lookups += 1
        return StoredCredential(
            MINTED.credential_id, CredentialKind.SERVICE, "ops", MINTED.secret_sha256, None,
            (), (Role.OPERATOR,), None, datetime.now(UTC), None, None,
        )  # fmt: skip


class _Context:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {MINTED.token}"),)

    def peer(self) -> str:
        return self._peer


def _interceptor(store: _Store, *, plaintext: bool, upstream: bool = False) -> AccessInterceptor:
    return AccessInterceptor(
        Authenticator(store), {"/s/M": RULE}, [], plaintext=plaintext,
        tls_terminated_upstream=upstream,
    )  # fmt: skip


async def test_plaintext_from_another_host_is_refused_without_a_look_up() -> None:
    store = _Store()
    remote: Any = _Context("ipv4:10.1.2.3:5000")
    with pytest.raises(UnauthenticatedError, match="plaintext from another host"):
        await _interceptor(store, plaintext=True)._admit("/s/M", RULE, remote, None)
    assert store.lookups == 0


@pytest.mark.parametrize(
    ("peer", "plaintext", "upstream"),
    [
        ("ipv4:127.0.0.1:5000", True, False),
        ("ipv6:[::1]:5000", True, False),
        ("ipv4:10.1.2.3:5000", False, False),  # the port serves TLS
        ("ipv4:10.1.2.3:5000", True, True),  # a mesh terminates TLS in front
    ],
)
async def test_local_peers_tls_ports_and_upstream_tls_are_admitted(
    peer: str, plaintext: bool, upstream: bool
) -> None:
    interceptor = _interceptor(_Store(), plaintext=plaintext, upstream=upstream)
    context: Any = _Context(peer)
    caller = await interceptor._admit("/s/M", RULE, context, None)
    assert caller.credential_id == MINTED.credential_id

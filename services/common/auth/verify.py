"""Turns a presented token into a Caller: parsed, looked up, checked, and cached.

Verified callers are cached for `cache_ttl_s` (30 s by default), so a call costs no
database round trip; a revoked token, or a change to its account, takes effect within
that bound. Expiry is checked on every call, so it is exact. Unknown and revoked tokens
are cached too (bounded), so a flood of bad tokens costs one look-up each, and
concurrent first calls with one token share one look-up.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

from services.common.auth import tokens
from services.common.auth.model import Caller
from services.common.auth.store import StoredCredential
from services.common.errors import UnauthenticatedError

DEFAULT_CACHE_TTL_S = 30.0
MAX_CACHED = 10_000


class CredentialLookup(Protocol):
    """What verification needs from the store."""

    async def lookup(self, credential_id: UUID) -> StoredCredential | None: ...


@dataclass(frozen=True, slots=True)
class _Verdict:
    caller: Caller | None
    refusal: str  # why not, when caller is None
    until: float  # monotonic time after which to look again


def caller_of(stored: StoredCredential) -> Caller:
    """The Caller a stored credential stands for."""
    return Caller(
        credential_id=stored.id,
        kind=stored.kind,
        name=stored.name,
        account_id=stored.account_id,
        account_archived=stored.account_archived,
        scopes=frozenset(stored.scopes),
        roles=frozenset(stored.roles),
        ingest_accounts=(
            None
            if stored.ingest_account_ids is None
            else frozenset(str(a) for a in stored.ingest_account_ids)
        ),
        expires_at=stored.expires_at,
    )


class Authenticator:
    """Verifies bearer tokens against the credential store, with a bounded cache."""

    def __init__(
        self,
        lookup: CredentialLookup,
        *,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._lookup = lookup
        self._ttl = cache_ttl_s
        self._monotonic = monotonic
        self._now = now
        self._cache: OrderedDict[str, _Verdict] = OrderedDict()
        self._pending: dict[str, asyncio.Future[_Verdict]] = {}

    async def authenticate(self, token: str) -> Caller:
        """The caller `token` stands for, or UnauthenticatedError saying why not."""
        verdict = self._cache.get(token)
        if verdict is None or verdict.until <= self._monotonic():
            verdict = await self._verify_once(token)
        caller = verdict.caller
        if caller is None:
            raise UnauthenticatedError(verdict.refusal)
        if caller.expires_at is not None and caller.expires_at <= self._now():
            raise UnauthenticatedError(f"credential {caller.credential_id} has expired")
        return caller

    async def _verify_once(self, token: str) -> _Verdict:
        pending = self._pending.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Verdict] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        try:
            verdict = await self._verify(token)
            future.set_result(verdict)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._pending[token]
        return verdict

    async def _verify(self, token: str) -> _Verdict:
        try:
            parsed = tokens.parse(token)
        except tokens.MalformedTokenError as exc:
            # Not cached: nothing was looked up, and the text is attacker-sized.
            return _Verdict(None, str(exc), 0.0)
        stored = await self._lookup.lookup(parsed.credential_id)
        verdict = _judge(parsed, stored, self._monotonic() + self._ttl)
        self._cache[token] = verdict
        self._cache.move_to_end(token)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return verdict


def _judge(parsed: tokens.ParsedToken, stored: StoredCredential | None, until: float) -> _Verdict:
    # One message for "no such id" and "wrong secret": neither says which ids exist.
    unknown = _Verdict(None, "unknown credential", until)
    if stored is None or stored.kind is not parsed.kind:
        return unknown
    if not tokens.secrets_match(stored.secret_sha256, parsed.secret_sha256):
        return unknown
    if stored.revoked_at is not None:
        return _Verdict(None, f"credential {stored.id} was revoked", until)
    return _Verdict(caller_of(stored), "", until)

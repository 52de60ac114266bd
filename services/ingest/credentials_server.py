"""CredentialService servicer: account tokens and service credentials over gRPC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from services.common.auth.context import caller
from services.common.auth.model import CredentialKind, Role
from services.common.auth.store import StoredCredential
from services.common.errors import FieldProblem, InvalidArgumentError
from services.common.gen.handoff.auth.v1 import access_pb2, credentials_pb2, credentials_pb2_grpc
from services.common.timestamps import timestamp_message
from services.ingest import credentials
from services.ingest.credentials import CredentialAdminStore

Context = grpc.aio.ServicerContext[object, object]
_ROLE_OUT = {
    Role.OPERATOR: access_pb2.OPERATOR,
    Role.INGEST: access_pb2.INGEST,
    Role.SCHEDULER: access_pb2.SCHEDULER,
}
_ROLE_IN = {wire: role for role, wire in _ROLE_OUT.items()}
_KIND_OUT = {
    CredentialKind.ACCOUNT: credentials_pb2.ACCOUNT_TOKEN,
    CredentialKind.SERVICE: credentials_pb2.SERVICE,
}


def _expiry(request: credentials_pb2.CreateAccountTokenRequest
            | credentials_pb2.CreateServiceCredentialRequest) -> datetime | None:  # fmt: skip
    return request.expires_at.ToDatetime(tzinfo=UTC) if request.HasField("expires_at") else None


def _roles(values: list[int]) -> list[Role]:
    roles = []
    for i, value in enumerate(values):
        role = _ROLE_IN.get(value)  # type: ignore[call-overload]
        if role is None:
            problem = FieldProblem(f"roles[{i}]", "UNKNOWN_CODE", f"{value} is not a role")
            raise InvalidArgumentError(problem.message, [problem])
        roles.append(role)
    return roles


def credential_message(stored: StoredCredential) -> credentials_pb2.Credential:
    """The Credential message (never the secret, nor its hash)."""
    return credentials_pb2.Credential(
        id=str(stored.id),
        kind=_KIND_OUT[stored.kind],
        name=stored.name,
        account_id=str(stored.account_id) if stored.account_id else "",
        scopes=list(stored.scopes),
        roles=[_ROLE_OUT[r] for r in stored.roles],
        ingest_account_ids=[str(a) for a in stored.ingest_account_ids or ()],
        created_at=timestamp_message(stored.created_at),
        expires_at=timestamp_message(stored.expires_at),
        revoked_at=timestamp_message(stored.revoked_at),
    )


class CredentialServicer(credentials_pb2_grpc.CredentialServiceServicer):
    """Create, get, list and revoke credentials; tell a caller who it is."""

    def __init__(
        self, store: CredentialAdminStore, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    async def CreateAccountToken(  # noqa: N802
        self, request: credentials_pb2.CreateAccountTokenRequest, context: Context
    ) -> credentials_pb2.CreatedCredential:
        stored, token = await credentials.create_account_token(
            self._store, request.account_id, request.name, list(request.scopes),
            _expiry(request), self._clock(),
        )  # fmt: skip
        return credentials_pb2.CreatedCredential(credential=credential_message(stored), token=token)

    async def CreateServiceCredential(  # noqa: N802
        self, request: credentials_pb2.CreateServiceCredentialRequest, context: Context
    ) -> credentials_pb2.CreatedCredential:
        stored, token = await credentials.create_service_credential(
            self._store, request.name, _roles(list(request.roles)),
            list(request.ingest_account_ids), _expiry(request), self._clock(),
        )  # fmt: skip
        return credentials_pb2.CreatedCredential(credential=credential_message(stored), token=token)

    async def GetCredential(  # noqa: N802
        self, request: credentials_pb2.GetCredentialRequest, context: Context
    ) -> credentials_pb2.Credential:
        return credential_message(await credentials.get_credential(self._store, request.id))

    async def ListCredentials(  # noqa: N802
        self, request: credentials_pb2.ListCredentialsRequest, context: Context
    ) -> credentials_pb2.ListCredentialsResponse:
        page = await credentials.list_credentials(
            self._store, request.account_id, request.include_revoked, request.page_size,
            request.page_token,
        )  # fmt: skip
        return credentials_pb2.ListCredentialsResponse(
            credentials=[credential_message(c) for c in page.items], next_page_token=page.next_token
        )

    async def RevokeCredential(  # noqa: N802
        self, request: credentials_pb2.RevokeCredentialRequest, context: Context
    ) -> credentials_pb2.Credential:
        return credential_message(await credentials.revoke_credential(self._store, request.id))

    async def WhoAmI(  # noqa: N802
        self, request: credentials_pb2.WhoAmIRequest, context: Context
    ) -> credentials_pb2.Credential:
        return credential_message(
            await credentials.get_credential(self._store, str(caller().credential_id))
        )

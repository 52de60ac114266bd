"""The gRPC servicers the ingest process mounts, over one store, with what they own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from services.common.auth.store import CredentialStore
from services.common.gen.handoff.auth.v1 import credentials_pb2, credentials_pb2_grpc
from services.common.gen.handoff.ingest.v1 import accounts_pb2, accounts_pb2_grpc
from services.common.grpc_server import GrpcService
from services.ingest.accounts_server import AccountServicer
from services.ingest.credentials_server import CredentialServicer
from services.ingest.memory_budget import DEFAULT_BUDGET_BYTES, MemoryBudget
from services.ingest.server import (
    STREAM_IDLE_S,
    IngestServicer,
    ingest_grpc_service,
    unary_coalescer,
)
from services.ingest.store import IngestStore


@dataclass(frozen=True)
class IngestServices:
    """The services to mount, and a watch that raises when a background task dies."""

    grpc: list[GrpcService]
    failed: Callable[[], Awaitable[None]]


@asynccontextmanager
async def ingest_services(
    store: IngestStore,
    credential_store: CredentialStore,
    *,
    stream_idle_s: float = STREAM_IDLE_S,
    memory_budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> AsyncIterator[IngestServices]:
    """IngestService and AccountService on `store`, CredentialService on `credential_store`,
    for the block: the unary coalescer they use is started on entry and closed on exit
    (after the server stops). A client stream idle for `stream_idle_s` is ended; requests
    in flight may cost at most `memory_budget_bytes` (memory_budget.py)."""
    admin = AccountServicer(store)
    keys = CredentialServicer(credential_store)
    async with unary_coalescer(store) as coalescer:
        yield IngestServices(
            [
                ingest_grpc_service(
                    IngestServicer(
                        store,
                        coalescer,
                        stream_idle_s=stream_idle_s,
                        memory=MemoryBudget(memory_budget_bytes),
                    )
                ),
                GrpcService(
                    accounts_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
                    lambda server: accounts_pb2_grpc.add_AccountServiceServicer_to_server(
                        admin, server
                    ),
                ),
                GrpcService(
                    credentials_pb2.DESCRIPTOR.services_by_name["CredentialService"].full_name,
                    lambda server: credentials_pb2_grpc.add_CredentialServiceServicer_to_server(
                        keys, server
                    ),
                ),
            ],
            coalescer.failed,
        )

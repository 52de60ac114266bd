"""The gRPC servicers the ingest process mounts, over one store."""

from __future__ import annotations

from services.common.auth.store import CredentialStore
from services.common.gen.handoff.auth.v1 import credentials_pb2, credentials_pb2_grpc
from services.common.gen.handoff.ingest.v1 import accounts_pb2, accounts_pb2_grpc
from services.common.grpc_server import GrpcService
from services.ingest.accounts_server import AccountServicer
from services.ingest.credentials_server import CredentialServicer
from services.ingest.server import IngestServicer, ingest_grpc_service
from services.ingest.store import IngestStore


def ingest_services(store: IngestStore, credential_store: CredentialStore) -> list[GrpcService]:
    """IngestService and AccountService on `store`, CredentialService on `credential_store`."""
    admin = AccountServicer(store)
    keys = CredentialServicer(credential_store)
    return [
        ingest_grpc_service(IngestServicer(store)),
        GrpcService(
            accounts_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
            lambda server: accounts_pb2_grpc.add_AccountServiceServicer_to_server(admin, server),
        ),
        GrpcService(
            credentials_pb2.DESCRIPTOR.services_by_name["CredentialService"].full_name,
            lambda server: credentials_pb2_grpc.add_CredentialServiceServicer_to_server(
                keys, server
            ),
        ),
    ]

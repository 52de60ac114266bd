"""Integration fixtures: the real ingest servicers on port 0 over the test's own database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from services.common.auth.client import credential_channel
from services.common.auth.model import Role
from services.common.auth.store import CredentialStore
from services.common.gen.handoff.ingest.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    ingest_pb2_grpc,
)
from services.common.grpc_server import (
    MAX_MESSAGE_BYTES,
    RunningServer,
    grpc_server,
)
from services.ingest.services import ingest_services
from services.ingest.store import IngestStore
from tests.integration.credentials_support import authenticator, service_token
from tests.integration.private_cluster import PrivateCluster, private_cluster_bin

if TYPE_CHECKING:
    from services.common.gen.handoff.ingest.v1.accounts_pb2_grpc import AccountServiceAsyncStub
    from services.common.gen.handoff.ingest.v1.ingest_pb2_grpc import IngestServiceAsyncStub


@dataclass(frozen=True)
class Target:
    """An account and one of its active campaigns, as the API names them."""

    account_id: str
    campaign_id: str


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL of the tests' own (never the shared one), with `handoff` migrated:
    fault tests restart it, terminate its backends and use up its connections."""
    bin_dir = private_cluster_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) for a private cluster")
    cluster = PrivateCluster(bin_dir)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
async def private_database(private_cluster: PrivateCluster) -> AsyncIterator[str]:
    """A fresh database on the private cluster, cloned from its migrated `handoff`."""
    await private_cluster.wait_until_accepting()
    name = f"fault_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(private_cluster.admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE handoff')
    finally:
        await conn.close()
    yield private_cluster.admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    await private_cluster.wait_until_accepting()
    conn = await asyncpg.connect(private_cluster.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> IngestStore:
    """The real store over the test's database."""
    return IngestStore(pool)


@pytest.fixture
async def ingest_server(store: IngestStore, pool: asyncpg.Pool) -> AsyncIterator[RunningServer]:
    """IngestService, AccountService and CredentialService served on a free loopback port."""
    async with (
        ingest_services(store, CredentialStore(pool)) as services,
        grpc_server(
            "127.0.0.1", 0, services.grpc, authenticator=authenticator(pool), grace_s=1.0
        ) as running,
    ):
        yield running


@pytest.fixture
async def operator_token(pool: asyncpg.Pool) -> str:
    """A service credential with the OPERATOR and INGEST roles (as `make run` makes)."""
    return await service_token(pool, Role.OPERATOR, Role.INGEST, name="test operator")


@pytest.fixture
async def channel(
    ingest_server: RunningServer, operator_token: str
) -> AsyncIterator[grpc.aio.Channel]:
    """A client channel to the test server, presenting `operator_token`."""
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    target = f"127.0.0.1:{ingest_server.port}"
    async with credential_channel(target, operator_token, options=options) as chan:
        yield chan


@pytest.fixture
def ingest(channel: grpc.aio.Channel) -> IngestServiceAsyncStub:
    """IngestService client."""
    return ingest_pb2_grpc.IngestServiceStub(channel)


@pytest.fixture
def accounts(channel: grpc.aio.Channel) -> AccountServiceAsyncStub:
    """AccountService client."""
    return accounts_pb2_grpc.AccountServiceStub(channel)


MakeTarget = Callable[[], Awaitable[Target]]


@pytest.fixture
def make_target(accounts: AccountServiceAsyncStub) -> MakeTarget:
    """Creates a fresh account with one campaign through the API."""

    async def make() -> Target:
        account = await accounts.CreateAccount(
            accounts_pb2.CreateAccountRequest(name=f"Advertiser {uuid.uuid4().hex[:6]}")
        )
        campaign = await accounts.CreateCampaign(
            accounts_pb2.CreateCampaignRequest(account_id=account.id, name="Spring offer")
        )
        return Target(account.id, campaign.id)

    return make


@pytest.fixture
async def target(make_target: MakeTarget) -> Target:
    """An account with one active campaign."""
    return await make_target()

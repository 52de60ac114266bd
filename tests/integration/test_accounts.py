"""AccountService over real gRPC into the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.gen.handoff.ingest.v1 import accounts_pb2
from tests.integration.conftest import Target

if TYPE_CHECKING:
    from services.common.gen.handoff.ingest.v1.accounts_pb2_grpc import AccountServiceAsyncStub


async def _error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_create_account_returns_it_active_with_its_time_zone(
    accounts: AccountServiceAsyncStub, pool: asyncpg.Pool
) -> None:
    account = await accounts.CreateAccount(
        accounts_pb2.CreateAccountRequest(name="  Acme  ", time_zone="America/New_York")
    )

    assert uuid.UUID(account.id)
    assert (account.name, account.time_zone) == ("Acme", "America/New_York")
    assert account.status == accounts_pb2.ACTIVE
    assert account.HasField("created_at")
    assert not account.HasField("archived_at")
    row = await pool.fetchrow("SELECT * FROM accounts WHERE id = $1", uuid.UUID(account.id))
    assert row is not None
    assert (row["name"], row["time_zone"], row["status"]) == ("Acme", "America/New_York", "active")


async def test_account_time_zone_defaults_to_utc(accounts: AccountServiceAsyncStub) -> None:
    account = await accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name="Acme"))

    assert account.time_zone == "UTC"


async def test_get_account_answers_what_create_returned(
    accounts: AccountServiceAsyncStub,
) -> None:
    created = await accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name="Acme"))

    fetched = await accounts.GetAccount(accounts_pb2.GetAccountRequest(id=created.id))

    assert fetched == created


async def test_create_account_with_the_same_id_twice_is_idempotent(
    accounts: AccountServiceAsyncStub, pool: asyncpg.Pool
) -> None:
    request = accounts_pb2.CreateAccountRequest(id=str(uuid.uuid4()), name="Acme")
    first = await accounts.CreateAccount(request)

    again = await accounts.CreateAccount(request)

    assert again == first
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 1


async def test_create_account_with_same_id_but_another_name_is_already_exists(
    accounts: AccountServiceAsyncStub,
) -> None:
    account_id = str(uuid.uuid4())
    await accounts.CreateAccount(accounts_pb2.CreateAccountRequest(id=account_id, name="Acme"))

    error = await _error(
        accounts.CreateAccount(accounts_pb2.CreateAccountRequest(id=account_id, name="Other"))
    )

    assert error.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_create_account_with_unknown_time_zone_is_invalid_argument(
    accounts: AccountServiceAsyncStub,
) -> None:
    error = await _error(
        accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name="A", time_zone="Mars/Base"))
    )

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "Mars/Base" in (error.details() or "")


async def test_create_account_without_name_is_invalid_argument(
    accounts: AccountServiceAsyncStub, pool: asyncpg.Pool
) -> None:
    error = await _error(accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name="  ")))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 0


async def test_unknown_account_is_not_found(accounts: AccountServiceAsyncStub) -> None:
    missing = str(uuid.uuid4())

    for call in (
        accounts.GetAccount(accounts_pb2.GetAccountRequest(id=missing)),
        accounts.ArchiveAccount(accounts_pb2.ArchiveAccountRequest(id=missing)),
        accounts.ListCampaigns(accounts_pb2.ListCampaignsRequest(account_id=missing)),
        accounts.CreateCampaign(accounts_pb2.CreateCampaignRequest(account_id=missing, name="C")),
    ):
        assert (await _error(call)).code() is grpc.StatusCode.NOT_FOUND


async def test_malformed_ids_are_invalid_argument_naming_the_request_field(
    accounts: AccountServiceAsyncStub, target: Target
) -> None:
    pb, account, campaign = accounts_pb2, target.account_id, target.campaign_id
    for call, field in (
        (accounts.GetAccount(pb.GetAccountRequest(id="acme")), "id"),
        (accounts.GetAccount(pb.GetAccountRequest(id="")), "id"),
        (accounts.ArchiveAccount(pb.ArchiveAccountRequest(id="12345")), "id"),
        (accounts.CreateAccount(pb.CreateAccountRequest(id="not-a-uuid", name="A")), "id"),
        (accounts.GetCampaign(pb.GetCampaignRequest(account_id=account, id="x")), "id"),
        (accounts.GetCampaign(pb.GetCampaignRequest(account_id="x", id=campaign)), "account_id"),
        (accounts.ArchiveCampaign(pb.ArchiveCampaignRequest(account_id=account, id="x")), "id"),
        (
            accounts.ArchiveCampaign(pb.ArchiveCampaignRequest(account_id="x", id=campaign)),
            "account_id",
        ),
        (accounts.CreateCampaign(pb.CreateCampaignRequest(account_id=account, id="x")), "id"),
        (accounts.CreateCampaign(pb.CreateCampaignRequest(account_id="x", name="C")), "account_id"),
        (accounts.ListCampaigns(pb.ListCampaignsRequest(account_id="x")), "account_id"),
    ):
        error = await _error(call)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [name for name, _ in _violated_fields(error)] == [field], error.details()


def _violated_fields(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found += [(v.field, v.reason) for v in bad_request.field_violations]
    return found


async def test_list_accounts_pages_through_every_account_once(
    accounts: AccountServiceAsyncStub,
) -> None:
    created = [
        (await accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name=f"A{i}"))).id
        for i in range(7)
    ]
    seen: list[str] = []
    pages = 0
    token = ""
    while True:
        page = await accounts.ListAccounts(
            accounts_pb2.ListAccountsRequest(page_size=3, page_token=token)
        )
        pages += 1
        assert len(page.accounts) <= 3
        seen.extend(a.id for a in page.accounts)
        token = page.next_page_token
        if not token:
            break

    assert seen == created
    assert pages == 3


async def test_list_accounts_with_exact_page_multiple_has_no_empty_last_page(
    accounts: AccountServiceAsyncStub,
) -> None:
    for i in range(4):
        await accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name=f"A{i}"))

    first = await accounts.ListAccounts(accounts_pb2.ListAccountsRequest(page_size=2))
    second = await accounts.ListAccounts(
        accounts_pb2.ListAccountsRequest(page_size=2, page_token=first.next_page_token)
    )

    assert len(second.accounts) == 2
    assert second.next_page_token == ""


async def test_list_accounts_hides_archived_unless_asked(
    accounts: AccountServiceAsyncStub,
) -> None:
    keep = await accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name="Keep"))
    gone = await accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name="Gone"))
    await accounts.ArchiveAccount(accounts_pb2.ArchiveAccountRequest(id=gone.id))

    active = await accounts.ListAccounts(accounts_pb2.ListAccountsRequest())
    everything = await accounts.ListAccounts(
        accounts_pb2.ListAccountsRequest(include_archived=True)
    )

    assert [a.id for a in active.accounts] == [keep.id]
    assert [a.id for a in everything.accounts] == [keep.id, gone.id]
    assert everything.accounts[1].status == accounts_pb2.ARCHIVED


async def test_list_accounts_refuses_a_forged_page_token_and_bad_page_size(
    accounts: AccountServiceAsyncStub,
) -> None:
    for request in (
        accounts_pb2.ListAccountsRequest(page_token="not-a-token"),
        accounts_pb2.ListAccountsRequest(page_size=-1),
        accounts_pb2.ListAccountsRequest(page_size=1001),
    ):
        error = await _error(accounts.ListAccounts(request))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_archive_account_archives_it_and_its_campaigns(
    accounts: AccountServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    second = await accounts.CreateCampaign(
        accounts_pb2.CreateCampaignRequest(account_id=target.account_id, name="Second")
    )

    archived = await accounts.ArchiveAccount(
        accounts_pb2.ArchiveAccountRequest(id=target.account_id)
    )

    assert archived.status == accounts_pb2.ARCHIVED
    assert archived.HasField("archived_at")
    for campaign_id in (target.campaign_id, second.id):
        campaign = await accounts.GetCampaign(
            accounts_pb2.GetCampaignRequest(account_id=target.account_id, id=campaign_id)
        )
        assert campaign.status == accounts_pb2.ARCHIVED
        assert campaign.HasField("archived_at")
    statuses = await pool.fetch("SELECT DISTINCT status FROM campaigns")
    assert [r["status"] for r in statuses] == ["archived"]


async def test_archiving_twice_keeps_the_first_archive_time(
    accounts: AccountServiceAsyncStub, target: Target
) -> None:
    request = accounts_pb2.ArchiveAccountRequest(id=target.account_id)
    first = await accounts.ArchiveAccount(request)

    again = await accounts.ArchiveAccount(request)

    assert again.archived_at == first.archived_at


async def test_archiving_an_account_leaves_other_accounts_alone(
    accounts: AccountServiceAsyncStub, target: Target
) -> None:
    other = await accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name="Other"))
    other_campaign = await accounts.CreateCampaign(
        accounts_pb2.CreateCampaignRequest(account_id=other.id, name="Theirs")
    )

    await accounts.ArchiveAccount(accounts_pb2.ArchiveAccountRequest(id=target.account_id))

    campaign = await accounts.GetCampaign(
        accounts_pb2.GetCampaignRequest(account_id=other.id, id=other_campaign.id)
    )
    assert campaign.status == accounts_pb2.ACTIVE


async def test_create_campaign_in_archived_account_is_failed_precondition(
    accounts: AccountServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    await accounts.ArchiveAccount(accounts_pb2.ArchiveAccountRequest(id=target.account_id))

    error = await _error(
        accounts.CreateCampaign(
            accounts_pb2.CreateCampaignRequest(account_id=target.account_id, name="Late")
        )
    )

    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 1


async def test_create_campaign_is_idempotent_on_id_and_name(
    accounts: AccountServiceAsyncStub, target: Target, pool: asyncpg.Pool
) -> None:
    request = accounts_pb2.CreateCampaignRequest(
        account_id=target.account_id, id=str(uuid.uuid4()), name="Summer"
    )
    first = await accounts.CreateCampaign(request)

    again = await accounts.CreateCampaign(request)

    assert again == first
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 2


async def test_create_campaign_with_same_id_but_another_name_is_already_exists(
    accounts: AccountServiceAsyncStub, target: Target
) -> None:
    error = await _error(
        accounts.CreateCampaign(
            accounts_pb2.CreateCampaignRequest(
                account_id=target.account_id, id=target.campaign_id, name="Renamed"
            )
        )
    )

    assert error.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_create_campaign_reusing_another_accounts_campaign_id_is_already_exists(
    accounts: AccountServiceAsyncStub, target: Target
) -> None:
    other = await accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name="Other"))

    error = await _error(
        accounts.CreateCampaign(
            accounts_pb2.CreateCampaignRequest(
                account_id=other.id, id=target.campaign_id, name="Spring offer"
            )
        )
    )

    assert error.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_campaign_is_not_visible_through_another_account(
    accounts: AccountServiceAsyncStub, target: Target
) -> None:
    other = await accounts.CreateAccount(accounts_pb2.CreateAccountRequest(name="Other"))

    for call in (
        accounts.GetCampaign(
            accounts_pb2.GetCampaignRequest(account_id=other.id, id=target.campaign_id)
        ),
        accounts.ArchiveCampaign(
            accounts_pb2.ArchiveCampaignRequest(account_id=other.id, id=target.campaign_id)
        ),
    ):
        assert (await _error(call)).code() is grpc.StatusCode.NOT_FOUND
    listed = await accounts.ListCampaigns(accounts_pb2.ListCampaignsRequest(account_id=other.id))
    assert list(listed.campaigns) == []


async def test_list_campaigns_pages_and_hides_archived_unless_asked(
    accounts: AccountServiceAsyncStub, target: Target
) -> None:
    made = [target.campaign_id]
    for i in range(4):
        campaign = await accounts.CreateCampaign(
            accounts_pb2.CreateCampaignRequest(account_id=target.account_id, name=f"C{i}")
        )
        made.append(campaign.id)
    await accounts.ArchiveCampaign(
        accounts_pb2.ArchiveCampaignRequest(account_id=target.account_id, id=made[2])
    )

    async def list_all(include_archived: bool) -> list[str]:
        seen: list[str] = []
        token = ""
        while True:
            page = await accounts.ListCampaigns(
                accounts_pb2.ListCampaignsRequest(
                    account_id=target.account_id,
                    page_size=2,
                    page_token=token,
                    include_archived=include_archived,
                )
            )
            seen.extend(c.id for c in page.campaigns)
            token = page.next_page_token
            if not token:
                return seen

    assert await list_all(include_archived=False) == [c for c in made if c != made[2]]
    assert await list_all(include_archived=True) == made


async def test_unknown_campaign_is_not_found(
    accounts: AccountServiceAsyncStub, target: Target
) -> None:
    missing = str(uuid.uuid4())

    for call in (
        accounts.GetCampaign(
            accounts_pb2.GetCampaignRequest(account_id=target.account_id, id=missing)
        ),
        accounts.ArchiveCampaign(
            accounts_pb2.ArchiveCampaignRequest(account_id=target.account_id, id=missing)
        ),
    ):
        assert (await _error(call)).code() is grpc.StatusCode.NOT_FOUND

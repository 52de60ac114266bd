"""AccountService servicer: accounts and campaigns over gRPC."""

from __future__ import annotations

import grpc

from services.common.errors import NotFoundError
from services.common.gen.handoff.ingest.v1 import accounts_pb2, accounts_pb2_grpc
from services.common.ids import parse_id
from services.common.timestamps import timestamp_message
from services.ingest import accounts
from services.ingest.accounts import AccountStore
from services.ingest.model import Account, Campaign, Status

_STATUS = {Status.ACTIVE: accounts_pb2.ACTIVE, Status.ARCHIVED: accounts_pb2.ARCHIVED}
Context = grpc.aio.ServicerContext[object, object]


def account_message(account: Account) -> accounts_pb2.Account:
    """The Account message for a domain account."""
    return accounts_pb2.Account(
        id=str(account.id),
        name=account.name,
        time_zone=account.time_zone,
        status=_STATUS[account.status],
        created_at=timestamp_message(account.created_at),
        archived_at=timestamp_message(account.archived_at),
    )


def campaign_message(campaign: Campaign) -> accounts_pb2.Campaign:
    """The Campaign message for a domain campaign."""
    return accounts_pb2.Campaign(
        id=str(campaign.id),
        account_id=str(campaign.account_id),
        name=campaign.name,
        status=_STATUS[campaign.status],
        created_at=timestamp_message(campaign.created_at),
        archived_at=timestamp_message(campaign.archived_at),
    )


class AccountServicer(accounts_pb2_grpc.AccountServiceServicer):
    """Create, get, list and archive accounts and campaigns."""

    def __init__(self, store: AccountStore) -> None:
        self._store = store

    async def CreateAccount(  # noqa: N802
        self, request: accounts_pb2.CreateAccountRequest, context: Context
    ) -> accounts_pb2.Account:
        account = await accounts.create_account(
            self._store, request.id, request.name, request.time_zone
        )
        return account_message(account)

    async def GetAccount(  # noqa: N802
        self, request: accounts_pb2.GetAccountRequest, context: Context
    ) -> accounts_pb2.Account:
        return account_message(await accounts.get_account(self._store, request.id))

    async def ListAccounts(  # noqa: N802
        self, request: accounts_pb2.ListAccountsRequest, context: Context
    ) -> accounts_pb2.ListAccountsResponse:
        page = await accounts.list_accounts(
            self._store, request.include_archived, request.page_size, request.page_token
        )
        return accounts_pb2.ListAccountsResponse(
            accounts=[account_message(a) for a in page.items], next_page_token=page.next_token
        )

    async def ArchiveAccount(  # noqa: N802
        self, request: accounts_pb2.ArchiveAccountRequest, context: Context
    ) -> accounts_pb2.Account:
        account_id = parse_id("id", request.id)
        account = await self._store.archive_account(account_id)
        if account is None:
            raise NotFoundError(f"account {account_id} does not exist")
        return account_message(account)

    async def CreateCampaign(  # noqa: N802
        self, request: accounts_pb2.CreateCampaignRequest, context: Context
    ) -> accounts_pb2.Campaign:
        campaign = await accounts.create_campaign(
            self._store, request.account_id, request.id, request.name
        )
        return campaign_message(campaign)

    async def GetCampaign(  # noqa: N802
        self, request: accounts_pb2.GetCampaignRequest, context: Context
    ) -> accounts_pb2.Campaign:
        campaign = await accounts.get_campaign(self._store, request.account_id, request.id)
        return campaign_message(campaign)

    async def ListCampaigns(  # noqa: N802
        self, request: accounts_pb2.ListCampaignsRequest, context: Context
    ) -> accounts_pb2.ListCampaignsResponse:
        page = await accounts.list_campaigns(
            self._store,
            request.account_id,
            request.include_archived,
            request.page_size,
            request.page_token,
        )
        return accounts_pb2.ListCampaignsResponse(
            campaigns=[campaign_message(c) for c in page.items], next_page_token=page.next_token
        )

    async def ArchiveCampaign(  # noqa: N802
        self, request: accounts_pb2.ArchiveCampaignRequest, context: Context
    ) -> accounts_pb2.Campaign:
        account_id = parse_id("account_id", request.account_id)
        campaign_id = parse_id("id", request.id)
        campaign = await self._store.archive_campaign(account_id, campaign_id)
        if campaign is None:
            raise NotFoundError(f"campaign {campaign_id} does not exist in account {account_id}")
        return campaign_message(campaign)

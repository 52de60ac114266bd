"""Account and campaign rules: validation, idempotent creates, pages of lists."""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime
from typing import Protocol
from uuid import UUID

from services.common.control_characters import has_control_character
from services.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.common.ids import parse_id
from services.common.paging import (
    Page,
    decode_token,
    encode_token,
    fetch_page,
    invalid_token,
    page_size,
)
from services.ingest.model import Account, Campaign, Status

MAX_NAME = 200


class AccountStore(Protocol):
    """What the account rules need from the store."""

    async def insert_account(
        self, account_id: UUID, name: str, time_zone: str
    ) -> Account | None: ...
    async def get_account(self, account_id: UUID) -> Account | None: ...
    async def list_accounts(
        self, include_archived: bool, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[Account]: ...
    async def archive_account(self, account_id: UUID) -> Account | None: ...
    async def insert_campaign(
        self, campaign_id: UUID, account_id: UUID, name: str
    ) -> Campaign | None: ...
    async def get_campaign(self, account_id: UUID, campaign_id: UUID) -> Campaign | None: ...
    async def list_campaigns(
        self,
        account_id: UUID,
        include_archived: bool,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Campaign]: ...
    async def archive_campaign(self, account_id: UUID, campaign_id: UUID) -> Campaign | None: ...


def check_name(name: str) -> str:
    """The trimmed name, or InvalidArgumentError (empty, too long, control characters)."""
    clean = name.strip()
    problem = None
    if not clean:
        problem = FieldProblem("name", "REQUIRED", "is required")
    elif len(clean) > MAX_NAME:
        problem = FieldProblem("name", "TOO_LONG", f"at most {MAX_NAME} characters")
    elif has_control_character(clean):
        problem = FieldProblem("name", "CONTROL_CHARACTER", "must not contain control characters")
    if problem:
        raise InvalidArgumentError(f"name {problem.message}", [problem])
    return clean


@functools.cache
def _known_zones() -> frozenset[str]:
    # Not ZoneInfo(key): it also opens files such as "localtime" or "posixrules" that
    # depend on the machine rather than naming a zone.
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory"})


def check_time_zone(time_zone: str) -> str:
    """The IANA zone name ('UTC' when blank), or InvalidArgumentError."""
    zone = time_zone.strip() or "UTC"
    if zone not in _known_zones():
        problem = FieldProblem(
            "time_zone", "UNKNOWN_CODE", f"{zone[:64]!r} is not an IANA time zone name"
        )
        raise InvalidArgumentError(problem.message, [problem])
    return zone


def encode_page_token(created_at: datetime, item_id: UUID) -> str:
    """An opaque token for the position after (created_at, id)."""
    return encode_token(_position(created_at, item_id))


def decode_page_token(token: str) -> tuple[datetime, UUID] | None:
    """The position a token stands for; None for an empty token."""
    if not token:
        return None
    created, _, item_id = decode_token(token).partition("|")
    try:
        position = datetime.fromisoformat(created), UUID(item_id)
    except ValueError as exc:
        raise invalid_token() from exc
    if position[0].tzinfo is None:  # tokens carry an aware timestamp
        raise invalid_token()
    return position


async def list_accounts(
    store: AccountStore, include_archived: bool, size: int, token: str
) -> Page[Account]:
    """One page of accounts in creation order, after the token's position."""
    after = decode_page_token(token)
    return await fetch_page(
        lambda limit: store.list_accounts(include_archived, after, limit),
        page_size(size),
        lambda account: _position(account.created_at, account.id),
    )


async def list_campaigns(
    store: AccountStore, account_id: str, include_archived: bool, size: int, token: str
) -> Page[Campaign]:
    """One page of the account's campaigns in creation order (NotFoundError: no account)."""
    account = await get_account(store, account_id, "account_id")
    after = decode_page_token(token)
    return await fetch_page(
        lambda limit: store.list_campaigns(account.id, include_archived, after, limit),
        page_size(size),
        lambda campaign: _position(campaign.created_at, campaign.id),
    )


def _position(created_at: datetime, item_id: UUID) -> str:
    return f"{created_at.isoformat()}|{item_id}"


async def create_account(
    store: AccountStore, account_id: str, name: str, time_zone: str
) -> Account:
    """Create an account; repeating a create with the same id and name returns it."""
    wanted = parse_id("id", account_id, required=False)
    clean_name, zone = check_name(name), check_time_zone(time_zone)
    created = await store.insert_account(wanted, clean_name, zone)
    if created is not None:
        return created
    existing = await store.get_account(wanted)
    if existing is None or existing.name != clean_name or existing.time_zone != zone:
        raise AlreadyExistsError(f"account {wanted} exists with other values")
    return existing


async def get_account(store: AccountStore, account_id: str, field: str = "id") -> Account:
    """The account, or NotFoundError; a malformed id is blamed on request field `field`."""
    wanted = parse_id(field, account_id)
    account = await store.get_account(wanted)
    if account is None:
        raise NotFoundError(f"account {wanted} does not exist")
    return account


async def create_campaign(
    store: AccountStore, account_id: str, campaign_id: str, name: str
) -> Campaign:
    """Create a campaign in an active account; idempotent on (id, name)."""
    account = await get_account(store, account_id, "account_id")
    if account.status is Status.ARCHIVED:
        raise FailedPreconditionError(f"account {account.id} is archived")
    wanted = parse_id("id", campaign_id, required=False)
    clean_name = check_name(name)
    created = await store.insert_campaign(wanted, account.id, clean_name)
    if created is not None:
        return created
    existing = await store.get_campaign(account.id, wanted)
    if existing is None or existing.name != clean_name:
        raise AlreadyExistsError(f"campaign {wanted} exists with other values")
    return existing


async def get_campaign(store: AccountStore, account_id: str, campaign_id: str) -> Campaign:
    """The account's campaign, or NotFoundError."""
    account, wanted = parse_id("account_id", account_id), parse_id("id", campaign_id)
    campaign = await store.get_campaign(account, wanted)
    if campaign is None:
        raise NotFoundError(f"campaign {wanted} does not exist in account {account}")
    return campaign

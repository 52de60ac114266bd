"""Mailchimp test support: connections stored as the connection API stores them, live
supervisors with the Mailchimp sender, and an engine with the Mailchimp transport."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.common.secrets import connection_secret_context
from services.delivery.engine import TRANSPORTS, DeliveryEngine
from services.delivery.key_slots import KeySlots
from services.delivery.live.senders import SENDERS
from services.delivery.live.supervisor import LiveSupervisor
from services.delivery.transports.mailchimp.batch import mailchimp_transports
from services.delivery.transports.mailchimp.live import mailchimp_senders
from services.delivery.transports.mailchimp.settings import MailchimpSettings
from tests.fakes.mailchimp import Mailchimp
from tests.integration.access_support import LOOPBACK, TEST_BOX, make_engine

KEY = "0123456789abcdef0123456789abcdef-us7"
LIST = "a1b2c3d4e5"
MAPPING = {"email": "EMAIL", "first_name": "FNAME", "last_name": "LNAME"}
QUICK = (0.05, 0.05, 0.05, 0.05, 0.05)


def settings(fake: Mailchimp, **values: Any) -> MailchimpSettings:
    """Settings pointing at the fake (its per-data-centre prefix)."""
    given: dict[str, Any] = {
        "list_id": LIST, "merge_fields": MAPPING, "tags": ("handoff",),
        "base_url": fake.base_url, "retry_schedule_s": QUICK,
    }  # fmt: skip
    given.update(values)
    return MailchimpSettings(**given)


async def mailchimp_connection(
    pool: asyncpg.Pool, account: uuid.UUID, config: MailchimpSettings, key: str = KEY
) -> uuid.UUID:
    """Store a Mailchimp connection, its key sealed as the connection API seals it."""
    cid = uuid.uuid4()
    sealed = {"api_key": TEST_BOX.seal(key, connection_secret_context(cid, "api_key"))}
    await pool.execute(
        "INSERT INTO connections (id, account_id, name, kind, settings, secrets) "
        "VALUES ($1, $2, $3, 'mailchimp', $4, $5)",
        cid, account, f"mailchimp-{cid.hex[:6]}", config.to_json(), sealed,
    )  # fmt: skip
    return cid


@asynccontextmanager
async def replica(
    pool: asyncpg.Pool,
    *,
    now: Callable[[], datetime] | None = None,
    lease_s: float = 3.0,
    max_loops: int = 1000,
) -> AsyncIterator[tuple[LiveSupervisor, KeySlots]]:
    """One delivery replica's live side: a supervisor with the Mailchimp sender and its
    own key slots (as services/delivery/__main__.py builds them)."""
    slots = KeySlots(pool, f"replica-{uuid.uuid4().hex[:6]}")
    running = LiveSupervisor(
        pool, TEST_BOX, LOOPBACK, lease_s=lease_s, now=now or (lambda: datetime.now(UTC)),
        max_loops=max_loops, senders={**SENDERS, "mailchimp": mailchimp_senders(slots)},
    )  # fmt: skip
    await running.start()
    await running.wait_claimed()
    try:
        yield running, slots
    finally:
        await running.close()
        await slots.close()


def mailchimp_engine(pool: asyncpg.Pool, slots: KeySlots | None = None) -> DeliveryEngine:
    """The test engine with the Mailchimp transport."""
    return make_engine(pool, transports={**TRANSPORTS, "mailchimp": mailchimp_transports(slots)})

"""The whole export API over the test's database, served on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from aiohttp import web

from services.common.audiences.store import AudienceStorePg
from services.common.referral_rows import ReferralRowReader
from services.common.secrets import SecretBox, new_key_entry
from services.common.signed_links import LinkSigner
from services.delivery.delivery_files import DeliveryFilesPg
from services.delivery.store import DeliveryStorePg
from services.export.audience_routes import AudienceRoutes
from services.export.audit import AuditLog
from services.export.audit_routes import AuditRoutes
from services.export.delivery_routes import DeliveryRoutes
from services.export.delivery_store import DeliveryHistoryPg
from services.export.health_routes import Readiness
from services.export.http_app import create_app, serve_http
from services.export.link_routes import LinkRoutes
from services.export.referral_routes import ReferralRoutes
from services.export.referral_store import ReferralReads
from services.export.store import ExportStore
from services.export.zapier_routes import ZapierRoutes
from services.export.zapier_store import ZapierStorePg
from services.scheduler.layouts.store import LayoutStorePg
from services.scheduler.tasks.store import TaskStorePg
from tests.integration.access_support import LOOPBACK
from tests.integration.credentials_support import authenticator


def export_app(pool: asyncpg.Pool, *, audience_max_bytes: int = 2**30) -> web.Application:
    """Every route group of the export API, as `python -m services.export` mounts them."""
    files = DeliveryFilesPg(DeliveryStorePg(pool), ReferralRowReader(pool))
    return create_app(
        ExportStore(pool), Readiness(), authenticator(pool),
        expected_schema_version=1, health_timeout_s=2,
        referrals=ReferralRoutes(ReferralReads(pool), LayoutStorePg(pool), AuditLog(pool)),
        audit=AuditRoutes(AuditLog(pool)),
        deliveries=DeliveryRoutes(
            DeliveryHistoryPg(pool), TaskStorePg(pool), files, AuditLog(pool)
        ),
        audiences=AudienceRoutes(AudienceStorePg(pool), max_bytes=audience_max_bytes),
        zapier=ZapierRoutes(
            ZapierStorePg(pool), ReferralReads(pool), AudienceStorePg(pool), LOOPBACK
        ),
        rate_limit=None,  # the tests call faster than a token may
        links=LinkRoutes(
            ExportStore(pool),
            LinkSigner(SecretBox.from_env({"HANDOFF_SECRET_KEYS": new_key_entry("test")})),
            files,
            AuditLog(pool),
        ),
    )  # fmt: skip


@asynccontextmanager
async def served_export(app: web.Application) -> AsyncIterator[str]:
    """The app on a free loopback port: its base URL."""
    async with serve_http(app, "127.0.0.1", 0, grace_s=0.5) as port:
        yield f"http://127.0.0.1:{port}"

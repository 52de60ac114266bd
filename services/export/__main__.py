"""Runs the export service (HTTP API plus gRPC health): python -m services.export."""

from __future__ import annotations

import os
import sys
from contextlib import AsyncExitStack
from functools import partial

from services.common.audiences.store import AudienceStorePg
from services.common.auth.store import CredentialStore
from services.common.auth.tls import http_ssl_context
from services.common.auth.verify import Authenticator
from services.common.config import ConfigError, ServiceConfig
from services.common.db import create_pool
from services.common.egress import EgressPolicy
from services.common.grpc_server import grpc_server_for, tls_files, wait_for_shutdown_signal
from services.common.migrate import discover_migrations
from services.common.readiness import database_answers
from services.common.referral_rows import ReferralRowReader
from services.common.secrets import SecretBox
from services.common.service import announce, run_service
from services.common.signed_links import LinkSigner
from services.delivery.delivery_files import DeliveryFilesPg
from services.delivery.store import DeliveryStorePg
from services.export.audience_routes import AudienceRoutes
from services.export.audit import AuditLog
from services.export.audit_routes import AuditRoutes
from services.export.config import ExportHttpConfig
from services.export.delivery_routes import DeliveryRoutes
from services.export.delivery_store import DeliveryHistoryPg
from services.export.health_routes import Readiness
from services.export.http_app import create_app, serve_http
from services.export.link_routes import LinkRoutes
from services.export.referral_routes import ReferralRoutes
from services.export.referral_store import ReferralReads
from services.export.store import ExportStore
from services.export.streams import StreamSlots, stream_limit
from services.export.zapier_routes import ZapierRoutes
from services.export.zapier_store import ZapierStorePg
from services.scheduler.layouts.store import LayoutStorePg
from services.scheduler.tasks.store import TaskStorePg

DEFAULT_PORT = 50054


async def serve(config: ServiceConfig, http: ExportHttpConfig) -> None:
    """Serve the HTTP API and the gRPC health service until SIGTERM."""
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            create_pool(
                config.database_url, min_size=config.db_pool_min, max_size=config.db_pool_max
            )
        )
        # Rows may come from a read replica; pins and the audit log stay on the primary.
        rows_pool = (
            await stack.enter_async_context(
                create_pool(
                    http.replica_url, min_size=config.db_pool_min, max_size=config.db_pool_max
                )
            )
            if http.replica_url
            else pool
        )
        authenticator = Authenticator(
            CredentialStore(pool), cache_ttl_s=config.access.auth_cache_ttl_s
        )
        readiness = Readiness()
        # Exports, re-downloads and audience uploads share the process's stream slots.
        slots = StreamSlots(http.max_streams or stream_limit(config.db_pool_max))
        delivery_files = DeliveryFilesPg(DeliveryStorePg(pool), ReferralRowReader(pool))
        app = create_app(
            ExportStore(pool),
            readiness,
            authenticator,
            expected_schema_version=max(m.version for m in discover_migrations()),
            health_timeout_s=http.health_timeout_s,
            tls_terminated_upstream=config.access.tls_terminated_upstream,
            trusted_proxies=http.trusted_proxies,
            rate_limit=http.rate_limit,
            # Signed links (recipient confirmation) need the deployment's secret keys.
            links=(
                LinkRoutes(
                    ExportStore(pool),
                    LinkSigner(SecretBox.from_env(os.environ)),
                    delivery_files,
                    AuditLog(pool),
                )
                if os.environ.get("HANDOFF_SECRET_KEYS")
                else None
            ),
            referrals=ReferralRoutes(
                ReferralReads(pool, rows_pool), LayoutStorePg(pool), AuditLog(pool), slots=slots
            ),
            audit=AuditRoutes(AuditLog(pool)),
            audiences=AudienceRoutes(
                AudienceStorePg(pool), max_bytes=http.audience_max_bytes, slots=slots
            ),
            # Zapier subscriptions and Catch Hooks make API connections: their target URLs
            # pass the egress policy the delivery service applies when it sends.
            zapier=ZapierRoutes(
                ZapierStorePg(pool),
                ReferralReads(pool),
                AudienceStorePg(pool),
                EgressPolicy.from_env(),
            ),
            deliveries=DeliveryRoutes(
                DeliveryHistoryPg(pool),
                TaskStorePg(pool),
                delivery_files,
                AuditLog(pool),
                slots=slots,
            ),
        )
        running = await stack.enter_async_context(
            grpc_server_for(config, [], authenticator, database_answers(pool))
        )
        announce("export", "gRPC", config.host, running.port)
        files = tls_files(config)
        http_port = await stack.enter_async_context(
            serve_http(
                app,
                http.host,
                http.port,
                grace_s=config.shutdown_grace_s,
                ssl_context=http_ssl_context(files) if files else None,
            )
        )
        announce("export", "HTTP", http.host, http_port)
        await wait_for_shutdown_signal()
        # Both faces report not ready before either stops taking calls.
        readiness.begin_draining()
        await running.health.enter_graceful_shutdown()


def main() -> int:
    """Read both configs, then run until SIGTERM; the exit code tells how it went."""
    try:
        http = ExportHttpConfig.from_env()
    except ConfigError as exc:
        print(f"export: configuration error: {exc}", file=sys.stderr)
        return 2
    return run_service("export", DEFAULT_PORT, partial(serve, http=http))


if __name__ == "__main__":
    sys.exit(main())

"""Runs the delivery service: python -m services.delivery."""

from __future__ import annotations

import os
import sys
from contextlib import AsyncExitStack

from services.common.auth.store import CredentialStore
from services.common.auth.verify import Authenticator
from services.common.config import ServiceConfig, env_float, env_int, env_str
from services.common.db import create_pool
from services.common.egress import EgressPolicy
from services.common.grpc_server import grpc_server_for, wait_for_shutdown_signal
from services.common.readiness import database_answers
from services.common.referral_rows import ReferralRowReader
from services.common.secrets import SecretBox
from services.common.service import announce, run_service
from services.common.signed_links import LinkSigner
from services.common.smtp_relay import SmtpRelay
from services.delivery.email_store import EmailRecipientsPg
from services.delivery.engine import TRANSPORTS, DeliveryEngine, RetryPolicy
from services.delivery.key_slots import KeySlots
from services.delivery.live.senders import SENDERS
from services.delivery.live.supervisor import LiveSupervisor, replica_name
from services.delivery.services import delivery_services
from services.delivery.spool import Spool
from services.delivery.store import DeliveryStorePg
from services.delivery.transports.email import download_links, email_transport_factory
from services.delivery.transports.mailchimp.batch import mailchimp_transports
from services.delivery.transports.mailchimp.live import mailchimp_senders
from services.delivery.transports.sailthru.transport import sailthru_transport_factory

DEFAULT_PORT = 50053


async def serve(config: ServiceConfig) -> None:
    """Serve DeliveryService and run the live loops of API connections until SIGTERM;
    attempts in flight are cancelled then (their leases lapse and another replica takes
    them over), live loops flush what they sent and hand their leases back."""
    env = os.environ
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            create_pool(
                config.database_url, min_size=config.db_pool_min, max_size=config.db_pool_max
            )
        )
        authenticator = Authenticator(
            CredentialStore(pool), cache_ttl_s=config.access.auth_cache_ttl_s
        )
        box = SecretBox.from_env(env)
        spool = Spool(
            env_str(env, "HANDOFF_EMAIL_SPOOL_DIR", ""),
            env_int(env, "HANDOFF_EMAIL_SPOOL_MAX_BYTES", 2 * 1024**3, minimum=1),
        )
        email = email_transport_factory(
            SmtpRelay.from_env(env),
            EmailRecipientsPg(pool),
            spool,
            download_links(
                LinkSigner(box),
                env_str(env, "HANDOFF_LINK_BASE_URL", "http://127.0.0.1:8080"),
                env_float(env, "HANDOFF_DOWNLOAD_LINK_TTL_S", 7 * 24 * 3600.0),
            ),
        )
        # One replica's share of every vendor key's concurrency slots (closed last).
        slots = KeySlots(pool, replica_name())
        stack.push_async_callback(slots.close)
        engine = DeliveryEngine(
            DeliveryStorePg(pool),
            ReferralRowReader(pool),
            box,
            EgressPolicy.from_env(env),
            lease_s=env_float(env, "HANDOFF_DELIVERY_LEASE_S", 30.0),
            max_running=env_int(env, "HANDOFF_DELIVERY_MAX_RUNNING", 8, minimum=1),
            per_host=env_int(env, "HANDOFF_DELIVERY_PER_HOST", 2, minimum=1),
            retry=RetryPolicy(
                first_s=env_float(env, "HANDOFF_DELIVERY_RETRY_FIRST_S", 30.0),
                window_s=env_float(env, "HANDOFF_DELIVERY_RETRY_WINDOW_S", 24 * 3600.0),
            ),
            transports={
                **TRANSPORTS,
                "email": email,
                "mailchimp": mailchimp_transports(slots),
                "sailthru": sailthru_transport_factory(spool),
            },
        )
        stack.push_async_callback(engine.close)
        live = LiveSupervisor(
            pool,
            box,
            EgressPolicy.from_env(env),
            lease_s=env_float(env, "HANDOFF_LIVE_LEASE_S", 15.0),
            max_loops=env_int(env, "HANDOFF_LIVE_MAX_CONNECTIONS", 1000, minimum=1),
            retention_days=env_int(env, "HANDOFF_LIVE_ATTEMPT_RETENTION_DAYS", 30, minimum=1),
            senders={**SENDERS, "mailchimp": mailchimp_senders(slots)},
        )
        await live.start()
        stack.push_async_callback(live.close)
        running = await stack.enter_async_context(
            grpc_server_for(
                config, delivery_services(engine), authenticator, database_answers(pool)
            )
        )
        announce("delivery", "gRPC", config.host, running.port)
        await wait_for_shutdown_signal()


if __name__ == "__main__":
    sys.exit(run_service("delivery", DEFAULT_PORT, serve))

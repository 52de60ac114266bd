"""Runs the scheduler service: python -m services.scheduler."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from services.common.audiences.store import AudienceStorePg, PullStorePg
from services.common.auth.client import credential_channel
from services.common.auth.store import CredentialStore
from services.common.auth.verify import Authenticator
from services.common.config import ServiceConfig, env_float, env_int, env_str
from services.common.db import create_pool
from services.common.egress import EgressPolicy
from services.common.grpc_server import grpc_server_for, wait_for_shutdown_signal
from services.common.readiness import database_answers
from services.common.secrets import SecretBox
from services.common.service import announce, run_service
from services.common.signed_links import LinkSigner
from services.common.smtp_relay import SmtpRelay
from services.delivery.key_slots import KeySlots
from services.delivery.live.supervisor import replica_name
from services.scheduler.audiences.readers import source_readers
from services.scheduler.audiences.refresher import AudienceRefresher
from services.scheduler.recipients.rules import Confirmations
from services.scheduler.services import scheduler_services
from services.scheduler.tasks.runner import GrpcDeliveryJobs, TaskRunner
from services.scheduler.tasks.store import TaskStorePg

DEFAULT_PORT = 50052
log = logging.getLogger(__name__)


def _read_roots(path: str) -> bytes:
    return Path(path).read_bytes()


def _stop_process_if_failed(task: asyncio.Task[None]) -> None:
    """A loop must not die silently: if one does, the whole process stops."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s died; stopping", task.get_name(), exc_info=task.exception())
        os.kill(os.getpid(), signal.SIGTERM)


def _in_background(
    stack: AsyncExitStack, stop: asyncio.Event, loop: Coroutine[Any, Any, None], name: str
) -> None:
    """Run a loop until the stack closes (which sets `stop` and waits for it); a loop
    that dies stops the process."""
    task = asyncio.create_task(loop, name=name)
    task.add_done_callback(_stop_process_if_failed)

    async def stopped() -> None:
        stop.set()
        await task

    stack.push_async_callback(stopped)


async def serve(config: ServiceConfig) -> None:
    """Serve the scheduler's gRPC services and run the task loop and the audience
    refresher until SIGTERM."""
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
        confirmations = Confirmations(
            SmtpRelay.from_env(env),
            LinkSigner(box),
            env_str(env, "HANDOFF_LINK_BASE_URL", "http://127.0.0.1:8080"),
            env_float(env, "HANDOFF_RECIPIENT_LINK_TTL_S", 7 * 24 * 3600.0),
        )
        egress = EgressPolicy.from_env(env)
        services = scheduler_services(pool, box, egress, confirmations)
        running = await stack.enter_async_context(
            grpc_server_for(config, services, authenticator, database_answers(pool))
        )
        announce("scheduler", "gRPC", config.host, running.port)
        token = env_str(env, "HANDOFF_SCHEDULER_TOKEN", "")
        stop = asyncio.Event()
        slots = KeySlots(pool, replica_name())  # Mailchimp's per-key cap, for its pulls
        stack.push_async_callback(slots.close)
        refresher = AudienceRefresher(
            PullStorePg(pool), AudienceStorePg(pool), box, egress, source_readers(slots=slots),
            tick_s=env_float(env, "HANDOFF_AUDIENCE_REFRESH_TICK_S", 5.0),
            concurrency=env_int(env, "HANDOFF_AUDIENCE_REFRESH_CONCURRENCY", 2),
        )  # fmt: skip
        _in_background(stack, stop, refresher.run(stop), "audience refresher")
        if token:
            target = env_str(env, "HANDOFF_SCHEDULER_DELIVERY_TARGET", "127.0.0.1:50053")
            ca_file = env_str(env, "HANDOFF_SCHEDULER_DELIVERY_CA_FILE", "")
            roots = _read_roots(ca_file) if ca_file else None
            channel = await stack.enter_async_context(
                credential_channel(target, token, root_certificates=roots)
            )
            runner = TaskRunner(
                TaskStorePg(pool),
                GrpcDeliveryJobs(channel),
                tick_s=env_float(env, "HANDOFF_SCHEDULER_TICK_S", 1.0),
                reissue_s=env_float(env, "HANDOFF_SCHEDULER_REISSUE_S", 15.0),
            )
            _in_background(stack, stop, runner.run(stop), "task runner")
        else:
            log.warning(
                "scheduled delivery is off: HANDOFF_SCHEDULER_TOKEN (a SCHEDULER credential) "
                "is not set"
            )
        await wait_for_shutdown_signal()


if __name__ == "__main__":
    sys.exit(run_service("scheduler", DEFAULT_PORT, serve))

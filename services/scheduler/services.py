"""The gRPC servicers the scheduler process mounts; later issues append theirs here."""

from __future__ import annotations

import asyncpg

from services.common.egress import EgressPolicy
from services.common.grpc_server import GrpcService
from services.common.referral_rows import ReferralRowReader
from services.common.secrets import SecretBox
from services.scheduler.connections.server import connection_service
from services.scheduler.connections.store import ConnectionStorePg
from services.scheduler.layouts.server import layout_service
from services.scheduler.layouts.store import LayoutStorePg
from services.scheduler.live.server import live_service
from services.scheduler.recipients.rules import Confirmations
from services.scheduler.recipients.server import recipient_service
from services.scheduler.recipients.store import RecipientStorePg
from services.scheduler.tasks.server import task_service
from services.scheduler.tasks.store import TaskStorePg


def scheduler_services(
    pool: asyncpg.Pool,
    box: SecretBox,
    egress: EgressPolicy,
    confirmations: Confirmations | None = None,
) -> list[GrpcService]:
    """Every servicer of the scheduler, built on the process's one pool (`confirmations`:
    how recipients' confirmation messages go out; None: they do not)."""
    return [
        layout_service(LayoutStorePg(pool), ReferralRowReader(pool)),
        connection_service(ConnectionStorePg(pool), box, egress, ReferralRowReader(pool)),
        task_service(TaskStorePg(pool), LayoutStorePg(pool), ReferralRowReader(pool)),
        live_service(pool),
        recipient_service(RecipientStorePg(pool), confirmations),
    ]

"""The gRPC servicers the scheduler process mounts; later issues append theirs here."""

from __future__ import annotations

import asyncpg

from services.common.grpc_server import GrpcService
from services.common.referral_rows import ReferralRowReader
from services.scheduler.layouts.server import layout_service
from services.scheduler.layouts.store import LayoutStorePg


def scheduler_services(pool: asyncpg.Pool) -> list[GrpcService]:
    """Every servicer of the scheduler, built on the process's one pool."""
    return [layout_service(LayoutStorePg(pool), ReferralRowReader(pool))]

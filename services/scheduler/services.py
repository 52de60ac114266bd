"""The gRPC servicers the scheduler process mounts; later issues append theirs here."""

from __future__ import annotations

import asyncpg

from services.common.grpc_server import GrpcService


def scheduler_services(pool: asyncpg.Pool) -> list[GrpcService]:
    """Every servicer of the scheduler, built on the process's one pool (none yet)."""
    del pool  # used once the first servicer lands
    return []

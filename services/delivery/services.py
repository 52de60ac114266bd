"""The gRPC servicers the delivery process mounts."""

from __future__ import annotations

from services.common.grpc_server import GrpcService
from services.delivery.engine import DeliveryEngine
from services.delivery.server import delivery_service


def delivery_services(engine: DeliveryEngine) -> list[GrpcService]:
    """Every servicer of the delivery service, over the process's one engine."""
    return [delivery_service(engine)]

"""DeliveryService servicer: StartDelivery hands a reserved delivery to the engine."""

from __future__ import annotations

import grpc

from services.common.gen.handoff.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from services.common.grpc_server import GrpcService
from services.common.ids import parse_id
from services.delivery.engine import DeliveryEngine

Context = grpc.aio.ServicerContext[object, object]
_OUTCOMES = {
    "started": delivery_pb2.StartDeliveryResponse.STARTED,
    "running": delivery_pb2.StartDeliveryResponse.RUNNING,
    "not_due": delivery_pb2.StartDeliveryResponse.NOT_DUE,
    "finished": delivery_pb2.StartDeliveryResponse.FINISHED,
}


class DeliveryServicer(delivery_pb2_grpc.DeliveryServiceServicer):
    """Starts deliveries on this replica's engine."""

    def __init__(self, engine: DeliveryEngine) -> None:
        self._engine = engine

    async def StartDelivery(  # noqa: N802
        self, request: delivery_pb2.StartDeliveryRequest, context: Context
    ) -> delivery_pb2.StartDeliveryResponse:
        delivery_id = parse_id("delivery_id", request.delivery_id)
        started = await self._engine.start(
            delivery_id, request.range.after_seq, request.range.through_seq
        )
        return delivery_pb2.StartDeliveryResponse(
            outcome=_OUTCOMES[started.outcome], attempt=started.attempt
        )


def delivery_service(engine: DeliveryEngine) -> GrpcService:
    """DeliveryService for grpc_server()."""
    servicer = DeliveryServicer(engine)
    return GrpcService(
        delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"].full_name,
        lambda server: delivery_pb2_grpc.add_DeliveryServiceServicer_to_server(servicer, server),
    )

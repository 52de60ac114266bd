"""RecipientService servicer: messages to rule calls and back."""

from __future__ import annotations

import grpc

from services.common.auth.context import caller
from services.common.auth.model import Role
from services.common.gen.handoff.scheduler.v1 import recipients_pb2, recipients_pb2_grpc
from services.common.grpc_server import GrpcService
from services.common.timestamps import timestamp_message
from services.scheduler.recipients import rules
from services.scheduler.recipients.store import Recipient, RecipientStorePg

Context = grpc.aio.ServicerContext[object, object]
_STATES = {
    "pending": recipients_pb2.PENDING,
    "approved": recipients_pb2.APPROVED,
    "revoked": recipients_pb2.REVOKED,
}


def _actor() -> rules.Actor:
    found = caller()
    how = "operator" if Role.OPERATOR in found.roles else "account"
    return rules.Actor(str(found.credential_id), how)


def recipient_message(recipient: Recipient) -> recipients_pb2.Recipient:
    """The Recipient message with its history."""
    return recipients_pb2.Recipient(
        id=str(recipient.id),
        connection_id=str(recipient.connection_id),
        address=recipient.address,
        state=_STATES[recipient.state],
        created_at=timestamp_message(recipient.created_at),
        changed_at=timestamp_message(recipient.changed_at),
        history=[
            recipients_pb2.RecipientEvent(
                state=_STATES[e.state], how=e.how, actor=e.actor, at=timestamp_message(e.at)
            )
            for e in recipient.history
        ],
    )


class RecipientServicer(recipients_pb2_grpc.RecipientServiceServicer):
    """Add, list, approve and revoke an email connection's recipients."""

    def __init__(self, store: RecipientStorePg, confirmations: rules.Confirmations | None) -> None:
        self._store = store
        self._confirmations = confirmations

    async def AddRecipient(  # noqa: N802
        self, request: recipients_pb2.AddRecipientRequest, context: Context
    ) -> recipients_pb2.Recipient:
        added = await rules.add_recipient(
            self._store, self._confirmations, _actor(), request.account_id,
            request.connection_id, request.address,
        )  # fmt: skip
        message = recipient_message(added.recipient)
        message.confirmation_sent = added.confirmation_sent
        message.confirmation_error = added.confirmation_error
        return message

    async def ListRecipients(  # noqa: N802
        self, request: recipients_pb2.ListRecipientsRequest, context: Context
    ) -> recipients_pb2.ListRecipientsResponse:
        found = await rules.list_recipients(self._store, request.account_id, request.connection_id)
        return recipients_pb2.ListRecipientsResponse(
            recipients=[recipient_message(r) for r in found]
        )

    async def ApproveRecipient(  # noqa: N802
        self, request: recipients_pb2.ApproveRecipientRequest, context: Context
    ) -> recipients_pb2.Recipient:
        approved = await rules.approve_recipient(
            self._store, _actor(), request.account_id, request.connection_id, request.id
        )
        return recipient_message(approved)

    async def RevokeRecipient(  # noqa: N802
        self, request: recipients_pb2.RevokeRecipientRequest, context: Context
    ) -> recipients_pb2.Recipient:
        revoked = await rules.revoke_recipient(
            self._store, _actor(), request.account_id, request.connection_id, request.id
        )
        return recipient_message(revoked)


def recipient_service(
    store: RecipientStorePg, confirmations: rules.Confirmations | None
) -> GrpcService:
    """RecipientService for grpc_server()."""
    servicer = RecipientServicer(store, confirmations)
    return GrpcService(
        recipients_pb2.DESCRIPTOR.services_by_name["RecipientService"].full_name,
        lambda server: recipients_pb2_grpc.add_RecipientServiceServicer_to_server(servicer, server),
    )

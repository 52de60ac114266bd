"""`make demo`: an account, a campaign and synthetic referrals, all through the gRPC API."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from services.common.auth.client import credential_channel
from services.common.gen.handoff.ingest.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
)
from services.common.grpc_server import MAX_MESSAGE_BYTES
from services.demo_data import synthetic_referrals

# Fixed ids: running the demo again finds the same account and campaign, and every
# referral comes back as a duplicate instead of a second copy.
DEMO_ACCOUNT_ID = "0de30000-0000-4000-8000-000000000001"
DEMO_CAMPAIGN_ID = "0de30000-0000-4000-8000-000000000002"
DEMO_SEED = 2024
DEMO_COUNT = 3000
BATCH_SIZE = 1000


class DemoError(RuntimeError):
    """The demo data could not be loaded; the message says which call failed."""


@dataclass(frozen=True)
class DemoOutcome:
    """What the ingest service answered for the demo rows."""

    sent: int
    accepted: int
    duplicates: int
    rejected: int
    first_rejection: str  # empty when every row went in


async def load_demo(
    target: str, token: str, count: int = DEMO_COUNT, seed: int = DEMO_SEED
) -> DemoOutcome:
    """Create the demo account and campaign at `target` and ingest `count` referrals, as
    the caller `token` (it needs the OPERATOR and INGEST roles)."""
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    async with credential_channel(target, token, options=options) as channel:
        accounts = accounts_pb2_grpc.AccountServiceStub(channel)
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        try:
            await accounts.CreateAccount(
                accounts_pb2.CreateAccountRequest(
                    id=DEMO_ACCOUNT_ID, name="Demo Advertiser", time_zone="America/New_York"
                ),
                timeout=10,
            )
            await accounts.CreateCampaign(
                accounts_pb2.CreateCampaignRequest(
                    account_id=DEMO_ACCOUNT_ID, id=DEMO_CAMPAIGN_ID, name="Demo spring offers"
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            raise DemoError(f"cannot create the demo account: {exc.details()}") from exc
        accepted = duplicates = rejected = 0
        first_rejection = ""
        for start in range(0, count, BATCH_SIZE):
            rows = synthetic_referrals(
                DEMO_ACCOUNT_ID, DEMO_CAMPAIGN_ID, min(BATCH_SIZE, count - start), seed, start=start
            )
            try:
                response = await ingest.IngestBatch(
                    ingest_pb2.IngestBatchRequest(referrals=rows), timeout=60
                )
            except grpc.aio.AioRpcError as exc:
                raise DemoError(f"IngestBatch failed: {exc.details()}") from exc
            accepted += response.accepted
            duplicates += response.duplicates
            rejected += response.rejected
            if response.rejected and not first_rejection:
                first_rejection = _describe_rejection(response)
    return DemoOutcome(count, accepted, duplicates, rejected, first_rejection)


def _describe_rejection(response: ingest_pb2.IngestBatchResponse) -> str:
    for result in response.results:
        if result.status == ingest_pb2.RowResult.REJECTED:
            reasons = "; ".join(f"{e.field}: {e.message}" for e in result.errors)
            return f"row {result.index} ({result.partner_referral_id}): {reasons}"
    return ""


def demo_report(outcome: DemoOutcome, psql_dsn: str) -> str:
    """What the demo did and how to look at the rows (a psql one-liner)."""
    lines = [
        f"demo: account {DEMO_ACCOUNT_ID}, campaign {DEMO_CAMPAIGN_ID}",
        f"demo: sent {outcome.sent} referrals: {outcome.accepted} accepted, "
        f"{outcome.duplicates} already there (duplicates), {outcome.rejected} rejected",
    ]
    if outcome.first_rejection:
        lines.append(f"demo: first rejection: {outcome.first_rejection}")
    # Text for a person to paste into psql, never run here; the id is our constant.
    query = (
        "SELECT country, count(*) FROM referrals "  # noqa: S608
        f"WHERE campaign_id = '{DEMO_CAMPAIGN_ID}' GROUP BY country ORDER BY count(*) DESC"
    )
    lines.append(f'demo: look at them with: psql {psql_dsn} -c "{query}"')
    return "\n".join(lines)

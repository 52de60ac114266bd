"""Ingest logic: validate rows, store the valid ones, explain every other one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from services.common.errors import (
    FailedPreconditionError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.ingest.model import ReferralInput, ReferralRow, RowResult, RowStatus, StoredRow
from services.ingest.store import CampaignState, ReferralKey
from services.ingest.validation import (
    check_batch_size,
    first_occurrences,
    referral_row,
    validate_referral,
)


class ReferralStore(Protocol):
    """What intake needs from the store."""

    async def insert_referrals(
        self, rows: Sequence[ReferralRow]
    ) -> dict[ReferralKey, StoredRow]: ...

    async def campaign_states(self, campaign_ids: Sequence[UUID]) -> dict[UUID, CampaignState]: ...


def campaign_problem(row: ReferralRow, state: CampaignState | None) -> FieldProblem:
    """Why a valid row of this campaign was not stored."""
    if state is None or str(state.account_id) != row.account_id:
        return FieldProblem(
            "campaign_id",
            "NOT_FOUND",
            f"campaign {row.campaign_id} does not exist in account {row.account_id}",
        )
    if state.account_status.value == "archived":
        return FieldProblem("account_id", "ARCHIVED", f"account {row.account_id} is archived")
    if state.status.value == "archived":
        return FieldProblem("campaign_id", "ARCHIVED", f"campaign {row.campaign_id} is archived")
    return FieldProblem("campaign_id", "INACTIVE", f"campaign {row.campaign_id} is not active")


async def ingest_rows(
    store: ReferralStore,
    rows: Sequence[ReferralInput | ReferralRow],
    now: datetime,
    first_index: int = 0,
    *,
    repeats_are_duplicates: bool = False,
) -> list[RowResult]:
    """Store every valid row of `rows` and return one result per row, in order.

    A ReferralRow has passed the fast path of validation already; a ReferralInput is
    validated here. A row repeating an earlier row's (account, partner id) is refused as
    DUPLICATE_IN_BATCH, or, with `repeats_are_duplicates` (streams, whose chunking
    is an accident of timing), answered as that earlier row was: DUPLICATE of its
    seq when it was stored, the same rejection when it was not.
    """
    results: dict[int, RowResult] = {}
    valid: list[tuple[int, ReferralRow]] = []
    for offset, raw in enumerate(rows):
        if isinstance(raw, ReferralRow):
            valid.append((offset, raw))
            continue
        outcome = validate_referral(raw, now)
        if isinstance(outcome, list):
            results[offset] = RowResult(
                first_index + offset, RowStatus.REJECTED, raw.partner_referral_id, 0,
                tuple(outcome),
            )  # fmt: skip
        else:
            valid.append((offset, referral_row(outcome)))
    repeats = first_occurrences((v.account_id, v.partner_referral_id) for _, v in valid)
    unique: list[tuple[int, ReferralRow]] = []
    repeated: list[tuple[int, int, ReferralRow]] = []  # (offset, offset of first, row)
    for position, (offset, row) in enumerate(valid):
        if position in repeats:
            repeated.append((offset, valid[repeats[position]][0], row))
        else:
            unique.append((offset, row))
    stored = await store.insert_referrals([row for _, row in unique])
    refused = [(o, r) for o, r in unique if (r.account_id, r.partner_referral_id) not in stored]
    states = (
        await store.campaign_states([UUID(r.campaign_id) for _, r in refused]) if refused else {}
    )
    for offset, row in unique:
        hit = stored.get((row.account_id, row.partner_referral_id))
        index = first_index + offset
        if hit is None:
            problem = campaign_problem(row, states.get(UUID(row.campaign_id)))
            results[offset] = RowResult(
                index, RowStatus.REJECTED, row.partner_referral_id, 0, (problem,)
            )
        else:
            status = RowStatus.DUPLICATE if hit.duplicate else RowStatus.ACCEPTED
            results[offset] = RowResult(index, status, row.partner_referral_id, hit.seq)
    for offset, first, row in repeated:
        index = first_index + offset
        earlier = results[first]
        if not repeats_are_duplicates:
            problem = FieldProblem(
                "partner_referral_id",
                "DUPLICATE_IN_BATCH",
                f"{row.partner_referral_id!r} repeats row {first_index + first} of this batch",
            )
            results[offset] = RowResult(
                index, RowStatus.REJECTED, row.partner_referral_id, 0, (problem,)
            )
        elif earlier.status is RowStatus.REJECTED:
            results[offset] = RowResult(
                index, RowStatus.REJECTED, row.partner_referral_id, 0, earlier.problems
            )
        else:
            results[offset] = RowResult(
                index, RowStatus.DUPLICATE, row.partner_referral_id, earlier.seq
            )
    return [results[offset] for offset in range(len(rows))]


def unary_outcome(result: RowResult) -> RowResult:
    """The result of a single-referral call, or the domain error that explains a rejection."""
    if result.status is not RowStatus.REJECTED:
        return result
    codes = {p.code for p in result.problems}
    if codes == {"NOT_FOUND"}:
        raise NotFoundError(result.problems[0].message)
    if codes <= {"ARCHIVED", "INACTIVE"}:
        raise FailedPreconditionError(result.problems[0].message)
    raise InvalidArgumentError(
        f"referral is invalid: {len(result.problems)} problem(s)", list(result.problems)
    )


def require_batch_size(size: int) -> None:
    """Raise InvalidArgumentError for an empty or oversized batch."""
    problem = check_batch_size(size)
    if problem is not None:
        raise InvalidArgumentError(problem.message, [problem])

"""Ingest logic: validate rows, store the valid ones, explain every other one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate, chain
from typing import Protocol
from uuid import UUID

from services.common.errors import (
    FailedPreconditionError,
    FieldProblem,
    InvalidArgumentError,
    NotFoundError,
)
from services.ingest.model import ReferralInput, ReferralRow, RowResult, RowStatus, StoredRow
from services.ingest.store import CampaignState, ReferralKey, copy_text
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

    async def insert_copy(
        self, lines: Sequence[bytes], keys: Sequence[ReferralKey], campaign_ids: Sequence[str]
    ) -> dict[ReferralKey, StoredRow]: ...

    async def campaign_states(self, campaign_ids: Sequence[UUID]) -> dict[UUID, CampaignState]: ...


def campaign_problem(
    account_id: str, campaign_id: str, state: CampaignState | None
) -> FieldProblem:
    """Why a valid row of this account and campaign was not stored."""
    if state is None or str(state.account_id) != account_id:
        return FieldProblem(
            "campaign_id",
            "NOT_FOUND",
            f"campaign {campaign_id} does not exist in account {account_id}",
        )
    if state.account_status.value == "archived":
        return FieldProblem("account_id", "ARCHIVED", f"account {account_id} is archived")
    if state.status.value == "archived":
        return FieldProblem("campaign_id", "ARCHIVED", f"campaign {campaign_id} is archived")
    return FieldProblem("campaign_id", "INACTIVE", f"campaign {campaign_id} is not active")


@dataclass(slots=True)
class ValidRows:
    """The valid rows of a request, in request order.

    Their key columns, and their values either as ReferralRows (validated in Python) or
    as COPY text, one line per row ending at `ends` (built by the compiled scanner).
    """

    offsets: list[int]
    accounts: list[str]
    partners: list[str]
    campaigns: list[str]
    rows: list[ReferralRow] | None = None
    copy: bytes = b""
    ends: list[int] = field(default_factory=list)

    @classmethod
    def of_rows(cls, pairs: Sequence[tuple[int, ReferralRow]]) -> ValidRows:
        """Python-validated rows with their request offsets."""
        rows = [row for _, row in pairs]
        return cls(
            [offset for offset, _ in pairs],
            [row.account_id for row in rows],
            [row.partner_referral_id for row in rows],
            [row.campaign_id for row in rows],
            rows,
        )

    def lines(self) -> list[bytes]:
        """One COPY text line per row."""
        if self.rows is not None:
            return [copy_text([row]) for row in self.rows]
        starts = [0, *self.ends][: len(self.ends)]
        return [self.copy[a:b] for a, b in zip(starts, self.ends, strict=True)]

    def merged(self, other: ValidRows) -> ValidRows:
        """Both sets of rows, in request order, as COPY text."""
        if not other.offsets:
            return self
        if not self.offsets:
            return other
        return ValidRows._of_lines(sorted(chain(self._entries(), other._entries())))

    def _entries(self) -> list[tuple[int, str, str, str, bytes]]:
        columns = (self.offsets, self.accounts, self.partners, self.campaigns, self.lines())
        return list(zip(*columns, strict=True))

    def kept(self, positions: Sequence[int]) -> ValidRows:
        """Only the rows at `positions` (ascending)."""
        if len(positions) == len(self.offsets):
            return self
        if self.rows is not None:
            return ValidRows.of_rows([(self.offsets[p], self.rows[p]) for p in positions])
        entries = self._entries()
        return ValidRows._of_lines([entries[p] for p in positions])

    @staticmethod
    def _of_lines(entries: Sequence[tuple[int, str, str, str, bytes]]) -> ValidRows:
        ends = list(accumulate(len(entry[4]) for entry in entries))
        return ValidRows(
            [e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries],
            [e[3] for e in entries], None, b"".join(e[4] for e in entries), ends,
        )  # fmt: skip


async def ingest_rows(
    store: ReferralStore,
    rows: Sequence[ReferralInput | ReferralRow],
    now: datetime,
    first_index: int = 0,
    *,
    repeats_are_duplicates: bool = False,
    allowed_accounts: frozenset[str] | None = None,
) -> list[RowResult]:
    """Store every valid row of `rows` and return one result per row, in order.

    A ReferralRow has passed the fast path of validation already; a ReferralInput is
    validated here. A row repeating an earlier row's (account, partner id) is refused as
    DUPLICATE_IN_BATCH, or, with `repeats_are_duplicates` (streams, whose chunking is an
    accident of timing), answered as that earlier row was: DUPLICATE of its seq when it
    was stored, the same rejection when it was not.
    """
    return await ingest_pairs(
        store, list(enumerate(rows)), now, first_index,
        repeats_are_duplicates=repeats_are_duplicates, allowed_accounts=allowed_accounts,
    )  # fmt: skip


async def ingest_pairs(
    store: ReferralStore,
    pairs: Sequence[tuple[int, ReferralInput | ReferralRow]],
    now: datetime,
    first_index: int = 0,
    *,
    scanned: ValidRows | None = None,
    count: int | None = None,
    repeats_are_duplicates: bool = False,
    allowed_accounts: frozenset[str] | None = None,
) -> list[RowResult]:
    """ingest_rows for rows given with their offsets in the request.

    `scanned` holds the rows the compiled scanner found clean; `pairs` are then the ones
    it deferred, and `count` is the size of the whole request. With `allowed_accounts`
    (a caller limited to some accounts), valid rows of other accounts are refused with
    PERMISSION_DENIED, row by row.
    """
    results: dict[int, RowResult] = {}
    valid: list[tuple[int, ReferralRow]] = []
    for offset, raw in pairs:
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
    rows = ValidRows.of_rows(valid)
    if scanned is not None:
        rows = scanned.merged(rows)
    total = len(pairs) if count is None else count
    if allowed_accounts is not None:
        rows = _refuse_accounts(rows, allowed_accounts, results, first_index)
    await _store_valid(store, rows, results, first_index, repeats_are_duplicates)
    return [results[offset] for offset in range(total)]


def _refuse_accounts(
    valid: ValidRows, allowed: frozenset[str], results: dict[int, RowResult], first_index: int
) -> ValidRows:
    """The rows of allowed accounts; every other row's refusal goes into `results`."""
    kept: list[int] = []
    for position, (offset, account, partner) in enumerate(
        zip(valid.offsets, valid.accounts, valid.partners, strict=True)
    ):
        if account in allowed:
            kept.append(position)
            continue
        problem = FieldProblem(
            "account_id",
            "PERMISSION_DENIED",
            f"this credential may not ingest for account {account}",
        )
        results[offset] = RowResult(
            first_index + offset, RowStatus.REJECTED, partner, 0, (problem,)
        )
    return valid.kept(kept)


async def _store_valid(
    store: ReferralStore,
    valid: ValidRows,
    results: dict[int, RowResult],
    first_index: int,
    repeats_are_duplicates: bool,
) -> None:
    """Store the valid rows; put each one's result in `results` by offset."""
    repeats = first_occurrences(zip(valid.accounts, valid.partners, strict=True))
    unique = valid
    if repeats:
        unique = valid.kept([p for p in range(len(valid.offsets)) if p not in repeats])
    keys = list(zip(unique.accounts, unique.partners, strict=True))
    if unique.rows is not None:
        stored = await store.insert_referrals(unique.rows)
    else:
        stored = await store.insert_copy(unique.lines(), keys, unique.campaigns)
    refused = [c for key, c in zip(keys, unique.campaigns, strict=True) if key not in stored]
    states = await store.campaign_states([UUID(c) for c in refused]) if refused else {}
    accepted, duplicate = RowStatus.ACCEPTED, RowStatus.DUPLICATE
    for offset, key, campaign in zip(unique.offsets, keys, unique.campaigns, strict=True):
        hit = stored.get(key)
        index = first_index + offset
        if hit is None:
            problem = campaign_problem(key[0], campaign, states.get(UUID(campaign)))
            results[offset] = RowResult(index, RowStatus.REJECTED, key[1], 0, (problem,))
        else:
            results[offset] = RowResult(
                index, duplicate if hit.duplicate else accepted, key[1], hit.seq
            )
    for position, first in repeats.items():
        offset, partner = valid.offsets[position], valid.partners[position]
        index = first_index + offset
        earlier = results[valid.offsets[first]]
        if not repeats_are_duplicates:
            problem = FieldProblem(
                "partner_referral_id",
                "DUPLICATE_IN_BATCH",
                f"{partner!r} repeats row {earlier.index} of this batch",
            )
            results[offset] = RowResult(index, RowStatus.REJECTED, partner, 0, (problem,))
        elif earlier.status is RowStatus.REJECTED:
            results[offset] = RowResult(index, RowStatus.REJECTED, partner, 0, earlier.problems)
        else:
            results[offset] = RowResult(index, RowStatus.DUPLICATE, partner, earlier.seq)


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

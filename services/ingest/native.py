"""The compiled scanner (`_scan.c`), configured from the referral's shape and the rules.

`scan()` turns a serialized IngestBatchRequest into COPY text for its clean referrals and
hands back the bytes of every other one, for the Python validator to decide. When the
extension is not built (no C compiler where Handoff was installed), or HANDOFF_PURE_PYTHON=1
asks for Python (see extension.py), `AVAILABLE` is False and callers take the Python path,
which gives the same answers, only slower.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType

from services.common.gen.handoff.ingest.v1 import referral_pb2
from services.common.referral_shape import COLUMNS_BY_NAME, Source
from services.ingest.extension import SCANNER
from services.ingest.fast_validation import Clock, state_verdict
from services.ingest.intake import ValidRows
from services.ingest.model import REFERRAL_COLUMNS, RowResult, RowStatus
from services.ingest.validation import (
    COUNTRIES,
    COUNTRIES_WITH_SUBDIVISIONS,
    MAX_EXTRA_KEY,
    MAX_EXTRA_KEYS,
    MAX_EXTRA_VALUE,
    canonical_ip,
)

_scan: ModuleType | None = SCANNER

AVAILABLE = _scan is not None
# Verdicts of the Python rules on states and non-IPv4 addresses, kept across batches.
_VERDICTS: dict[bytes, str | None] = {}
_MAX_VERDICTS = 100_000

# The scanner's rules (the R_ codes of _scan.c), by column; a column not named is plain
# text: stripped, one line, at most its length.
_RULE_CODES = (
    "text", "multiline", "required", "partner_key", "account", "campaign", "email", "birth",
    "phone", "postcode", "language", "country", "state", "ip", "moment", "extra",
)  # fmt: skip
RULES: Mapping[str, str] = {
    "account_id": "account", "campaign_id": "campaign", "partner_referral_id": "partner_key",
    "email": "email", "date_of_birth": "birth", "mobile": "phone", "phone": "phone",
    "state": "state", "postcode": "postcode", "country": "country", "language": "language",
    "partner_id": "required", "ad_text": "multiline", "opted_in_at": "moment",
    "ip_address": "ip", "extra": "extra",
}  # fmt: skip
_MESSAGES = {
    Source.REFERRAL: (0, referral_pb2.Referral.DESCRIPTOR),
    Source.CONSUMER: (1, referral_pb2.Consumer.DESCRIPTOR),
    Source.OPT_IN: (2, referral_pb2.OptIn.DESCRIPTOR),
}


def scanner_columns() -> list[tuple[int, int, int, int, bool]]:
    """The scanner's columns in COPY order: (message, field number, rule, limit, nullable),
    from the referral's shape and the proto descriptor."""
    columns = []
    for name in REFERRAL_COLUMNS:
        column = COLUMNS_BY_NAME[name]
        message, descriptor = _MESSAGES[column.source]
        field = descriptor.fields_by_name.get(name)
        if field is None:
            raise LookupError(f"referral_shape column {name!r} is not a field of {descriptor.name}")
        rule = _RULE_CODES.index(RULES.get(name, "text"))
        columns.append((message, field.number, rule, column.max_length, column.nullable))
    return columns


def _nested_numbers() -> tuple[int, int]:
    fields = referral_pb2.Referral.DESCRIPTOR.fields_by_name
    return fields["consumer"].number, fields["opt_in"].number


@dataclass(frozen=True, slots=True)
class Scanned:
    """What the scanner made of one request."""

    count: int  # referrals in the request
    clean: ValidRows  # as COPY text, in request order
    deferred: list[tuple[int, bytes]]  # (offset, serialized Referral) for Python to decide


def _decide(kind: str, value: str, country: str) -> str | None:
    if kind == "S":
        return state_verdict(country, value)
    return canonical_ip(value)


def _country_table() -> bytes:
    table = bytearray(26 * 26)
    letters = string.ascii_uppercase
    for code in COUNTRIES:
        if len(code) == 2 and code[0] in letters and code[1] in letters:
            index = letters.index(code[0]) * 26 + letters.index(code[1])
            table[index] = 2 if code in COUNTRIES_WITH_SUBDIVISIONS else 1
    return bytes(table)


if _scan is not None:
    _scan.configure(
        scanner_columns(),
        _country_table(),
        MAX_EXTRA_KEYS,
        MAX_EXTRA_KEY,
        MAX_EXTRA_VALUE,
        *_nested_numbers(),
    )


def scan(data: bytes, clock: Clock) -> Scanned | None:
    """The request's clean rows and deferred referrals; None when protobuf must parse it.

    None also when the extension is not built.
    """
    if _scan is None:
        return None
    if len(_VERDICTS) > _MAX_VERDICTS:
        _VERDICTS.clear()
    today = clock.today.year * 10000 + clock.today.month * 100 + clock.today.day
    found = _scan.scan_batch(data, clock.earliest_s, clock.latest_us, today, _VERDICTS, _decide)
    if found is None:
        return None
    count, copy, ends, offsets, accounts, partners, campaigns, deferred = found
    clean = ValidRows(offsets, accounts, partners, campaigns, None, copy, ends)
    return Scanned(count, clean, deferred)


def encode_results(
    results: list[RowResult], codes: Mapping[RowStatus, int], counts: Mapping[RowStatus, int]
) -> bytes | None:
    """A serialized IngestBatchResponse for `results`; None when the extension is not built."""
    if _scan is None:
        return None
    encoded: bytes = _scan.encode_results(
        results,
        dict(codes),
        counts[RowStatus.ACCEPTED],
        counts[RowStatus.DUPLICATE],
        counts[RowStatus.REJECTED],
    )
    return encoded

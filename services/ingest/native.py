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
    Rule,
    canonical_ip,
    rule_of,
)

_scan: ModuleType | None = SCANNER

AVAILABLE = _scan is not None
# Verdicts of the Python rules on states and non-IPv4 addresses, kept across batches.
_VERDICTS: dict[bytes, str | None] = {}
_MAX_VERDICTS = 100_000

# The R_ codes of _scan.c, in their order: each field's rule is validation.FIELD_RULES'.
C_RULES: tuple[Rule, ...] = (
    Rule.TEXT, Rule.MULTILINE, Rule.REQUIRED, Rule.PARTNER_KEY, Rule.ACCOUNT, Rule.CAMPAIGN,
    Rule.EMAIL, Rule.BIRTH, Rule.PHONE, Rule.POSTCODE, Rule.LANGUAGE, Rule.COUNTRY,
    Rule.STATE, Rule.IP, Rule.MOMENT, Rule.EXTRA,
)  # fmt: skip
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
        rule = C_RULES.index(rule_of(name))
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

"""The fast path of validation: a whole batch of clean referral messages in a few passes.

It applies the reference validator's rule data (validation.FIELD_RULES, the patterns,
limits and tables there) column by column; it has no rules of its own.

Most batches are clean, and most values repeat (countries, states, partners, ad texts).
So instead of validating row by row, each field is checked once per batch: a column is
gathered with C-level map calls, its lengths and control characters are checked in one
pass, and pattern rules run once per distinct value. Rows where any check fails come
back as None, and the caller runs the full validator on them, which reports every
problem precisely. A property test checks that every accepted row equals what the full
validator would store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache, partial
from itertools import chain
from operator import attrgetter, methodcaller
from typing import Protocol
from uuid import UUID

from services.common.control_characters import CONTROL, CONTROL_MULTILINE
from services.common.errors import FieldProblem
from services.ingest.model import CONSUMER_FIELDS, OPT_IN_FIELDS, REFERRAL_COLUMNS, ReferralRow
from services.ingest.validation import (
    CLOCK_SKEW,
    COUNTRIES,
    COUNTRIES_WITH_SUBDIVISIONS,
    EMAIL,
    EXTRA_KEY,
    IPV4,
    JSON_ENCODER,
    LANGUAGE,
    MAX_EXTRA_KEY,
    MAX_EXTRA_KEYS,
    MAX_EXTRA_VALUE,
    MAX_LENGTHS,
    OPT_IN_EARLIEST,
    PHONE_WITH_DIGITS,
    POSTCODE,
    Rule,
    canonical_ip,
    check_state,
    parse_birth_date,
    rule_of,
)

# Opt-in text fields in the order they are gathered (OPT_IN_FIELDS less opted_in_at).
OPT_IN_TEXT: tuple[str, ...] = tuple(f for f in OPT_IN_FIELDS if f != "opted_in_at")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST_S = int(OPT_IN_EARLIEST.timestamp())
_NANOS = 1_000_000_000
_MICROSECOND = timedelta(microseconds=1)
_KEY = rf"[A-Za-z_][A-Za-z0-9_.-]{{0,{MAX_EXTRA_KEY - 1}}}"
_EXTRA_KEYS = re.compile(f"{_KEY}(?:\x00{_KEY})*")
_COUNTRY_OR_EMPTY = COUNTRIES | {""}
# The rules as columnar checks: which may not be empty, which are one pattern.
_NOT_EMPTY = frozenset({Rule.REQUIRED, Rule.PARTNER_KEY, Rule.EMAIL})
_PATTERNS = {
    Rule.EMAIL: EMAIL, Rule.PHONE: PHONE_WITH_DIGITS, Rule.POSTCODE: POSTCODE,
    Rule.LANGUAGE: LANGUAGE,
}  # fmt: skip
_has_opted_in_at = methodcaller("HasField", "opted_in_at")
_new_row = partial(tuple.__new__, ReferralRow)
_IPV4_COLUMN = re.compile(f"(?:{IPV4.pattern})?(?:\n(?:{IPV4.pattern})?)*")


@dataclass(frozen=True, slots=True)
class Clock:
    """One reading of the clock, shared by every row of a batch."""

    latest: datetime  # the latest acceptable opt-in time
    latest_s: float
    latest_us: int  # the same, in whole microseconds since the epoch
    today: date
    earliest_s: int = _EARLIEST_S

    @classmethod
    def at(cls, now: datetime) -> Clock:
        """The bounds that hold at `now`."""
        latest = now + CLOCK_SKEW
        return cls(latest, latest.timestamp(), (latest - _EPOCH) // _MICROSECOND, now.date())


def extra_json(extra: Mapping[str, str]) -> str | None:
    """The attributes as a JSON object when every key and value is acceptable, else None."""
    if not extra:
        return "{}"
    if len(extra) > MAX_EXTRA_KEYS:
        return None
    # Usual case in three C-level passes; anything odd is checked key by key.
    values = extra.values()
    if (
        _EXTRA_KEYS.fullmatch("\x00".join(extra))
        and max(map(len, values)) <= MAX_EXTRA_VALUE
        and not CONTROL_MULTILINE.search("".join(values))
    ):
        return JSON_ENCODER.encode(dict(extra))
    for key, value in extra.items():
        if (
            len(key) > MAX_EXTRA_KEY
            or not EXTRA_KEY.fullmatch(key)
            or len(value) > MAX_EXTRA_VALUE
            or CONTROL_MULTILINE.search(value)
        ):
            return None
    return JSON_ENCODER.encode(dict(extra))


@lru_cache(maxsize=4096)
def canonical_uuid(value: str) -> str | None:
    """The value when it is already a UUID in canonical form, else None."""
    try:
        canonical = str(UUID(value))
    except ValueError:
        return None
    return canonical if canonical == value else None


class ReferralMessage(Protocol):
    """The shape of a Referral message that this module reads."""

    account_id: str
    campaign_id: str
    partner_referral_id: str

    @property
    def consumer(self) -> object: ...
    @property
    def opt_in(self) -> object: ...
    @property
    def extra(self) -> Mapping[str, str]: ...


def _mark_long(column: list[str], limit: int, bad: set[int]) -> None:
    if column and max(map(len, column)) > limit:
        bad.update(i for i, value in enumerate(column) if len(value) > limit)


def _mark_control(column: list[str], pattern: re.Pattern[str], bad: set[int]) -> None:
    if pattern.search("".join(column)):
        bad.update(i for i, value in enumerate(column) if pattern.search(value))


def _mark_values(column: list[str], wrong: set[str], bad: set[int]) -> None:
    if wrong:
        bad.update(i for i, value in enumerate(column) if value in wrong)


def _wrong(values: Iterable[str], pattern: re.Pattern[str]) -> set[str]:
    """The non-empty distinct values that do not fully match `pattern`."""
    return {v for v in set(values) if v and not pattern.fullmatch(v)}


def _text_column(objects: list[object], name: str, bad: set[int]) -> list[str]:
    raw: list[str] = list(map(attrgetter(name), objects))
    column = raw if rule_of(name) is Rule.MULTILINE else list(map(str.strip, raw))
    _mark_long(column, MAX_LENGTHS[name], bad)
    return column


def quick_rows(messages: Sequence[ReferralMessage], clock: Clock) -> list[ReferralRow | None]:
    """Stored values for each clean message; None where validate_referral must decide."""
    bad: set[int] = set()
    consumers = list(map(attrgetter("consumer"), messages))
    opt_ins = list(map(attrgetter("opt_in"), messages))

    accounts = _canonical_ids(list(map(attrgetter("account_id"), messages)))
    campaigns = _canonical_ids(list(map(attrgetter("campaign_id"), messages)))
    bad.update(
        i for i, (a, c) in enumerate(zip(accounts, campaigns, strict=True)) if not a or not c
    )
    partner_ids = _text_column(list(messages), "partner_referral_id", bad)
    texts: dict[str, list[str]] = {
        "partner_referral_id": partner_ids,
        **{name: _text_column(consumers, name, bad) for name in CONSUMER_FIELDS},
        **{name: _text_column(opt_ins, name, bad) for name in OPT_IN_TEXT},
    }
    for name, column in texts.items():
        multiline = rule_of(name) is Rule.MULTILINE
        _mark_control(column, CONTROL_MULTILINE if multiline else CONTROL, bad)
    stored: dict[str, Sequence[str | None]] = dict(texts)
    countries = next(c for name, c in texts.items() if rule_of(name) is Rule.COUNTRY)
    for name, column in texts.items():
        rule = rule_of(name)
        if rule in _NOT_EMPTY:
            bad.update(i for i, v in enumerate(column) if not v)
        if rule in _PATTERNS:
            _mark_values(column, _wrong(column, _PATTERNS[rule]), bad)
        elif rule is Rule.COUNTRY:
            _mark_values(column, set(column) - _COUNTRY_OR_EMPTY, bad)
        elif rule is Rule.BIRTH:
            _check_births(column, clock, bad)
            stored[name] = [birth or None for birth in column]
        elif rule is Rule.STATE:
            _check_states(countries, column, bad)
        elif rule is Rule.IP:
            stored[name] = _check_ips(column, bad)
    moments = _opted_in_at(opt_ins, clock, bad)

    extras = _extra_texts(messages)
    bad.update(i for i, extra in enumerate(extras) if extra is None)
    by_name: dict[str, Sequence[str | None]] = {
        **stored, "account_id": accounts, "campaign_id": campaigns, "opted_in_at": moments,
        "extra": extras,
    }  # fmt: skip
    # Columns in ReferralRow order: rows are built by C-level calls, no Python per row.
    columns = zip(*(by_name[name] for name in REFERRAL_COLUMNS), strict=True)
    rows: list[ReferralRow | None] = list(map(_new_row, columns))
    for index in bad:
        rows[index] = None
    return rows


def _extra_texts(messages: Sequence[ReferralMessage]) -> list[str | None]:
    """Each message's attributes as JSON, or None where they break a rule.

    Keys, lengths and control characters are checked once for the whole batch; only when
    that fails is each row checked on its own.
    """
    dicts: list[dict[str, str]] = list(map(dict, map(attrgetter("extra"), messages)))
    keys = list(chain.from_iterable(dicts))
    if not keys:
        return ["{}"] * len(dicts)
    values = list(chain.from_iterable(map(dict.values, dicts)))
    if (
        max(map(len, dicts)) <= MAX_EXTRA_KEYS
        and _EXTRA_KEYS.fullmatch("\x00".join(keys))
        and max(map(len, values)) <= MAX_EXTRA_VALUE
        and not CONTROL_MULTILINE.search("".join(values))
    ):
        return list(map(JSON_ENCODER.encode, dicts))
    return list(map(extra_json, dicts))


def _canonical_ids(column: list[str]) -> list[str | None]:
    """Each id in canonical form, or None; a batch repeats few distinct ids."""
    canonical = {value: canonical_uuid(value) for value in set(column)}
    return list(map(canonical.__getitem__, column))


def _check_births(column: list[str], clock: Clock, bad: set[int]) -> None:
    wrong = set()
    for value in set(column):
        problems: list[FieldProblem] = []
        if value and parse_birth_date(value, clock.today, problems) is None:
            wrong.add(value)
    _mark_values(column, wrong, bad)


def state_verdict(country: str, state: str) -> str | None:
    """The state as stored for a valid country code, or None when it is refused."""
    if not state or country not in COUNTRIES_WITH_SUBDIVISIONS:
        return state
    clean = {"state": state}
    problems: list[FieldProblem] = []
    check_state(clean, country, problems)
    return None if problems else clean["state"]


def _check_states(countries: list[str], states: list[str], bad: set[int]) -> None:
    """Check each distinct (country, state) once; normalise states in place."""
    verdicts = {pair: state_verdict(*pair) for pair in set(zip(countries, states, strict=True))}
    if all(verdicts[pair] == pair[1] for pair in verdicts):
        return
    for index, pair in enumerate(zip(countries, states, strict=True)):
        verdict = verdicts[pair]
        if verdict is None:
            bad.add(index)
        else:
            states[index] = verdict


def _check_ips(column: list[str], bad: set[int]) -> list[str | None]:
    if _IPV4_COLUMN.fullmatch("\n".join(column)):  # all IPv4 (canonical already) or empty
        return [value or None for value in column]
    canonical = {value: canonical_ip(value) if value else None for value in set(column)}
    for index, value in enumerate(column):
        if value and canonical[value] is None:
            bad.add(index)
    return [canonical[value] for value in column]


def _opted_in_at(opt_ins: list[object], clock: Clock, bad: set[int]) -> list[str]:
    present = list(map(_has_opted_in_at, opt_ins))
    stamps = list(map(attrgetter("opted_in_at"), opt_ins))
    seconds: list[int] = list(map(attrgetter("seconds"), stamps))
    nanos: list[int] = list(map(attrgetter("nanos"), stamps))
    earliest, latest = clock.earliest_s, clock.latest_s
    moments: list[str] = []
    for index, (has, second, nano) in enumerate(zip(present, seconds, nanos, strict=True)):
        if not has or not 0 <= nano < _NANOS or not earliest <= second <= latest:
            bad.add(index)
            moments.append("")
            continue
        moment = _EPOCH + timedelta(seconds=second, microseconds=nano // 1000)
        if moment > clock.latest:
            bad.add(index)
        moments.append(moment.isoformat())
    return moments

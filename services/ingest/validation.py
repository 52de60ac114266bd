"""Field-level validation of incoming referrals; pure functions, every problem reported."""

from __future__ import annotations

import enum
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from uuid import UUID

import pycountry

from services.common.control_characters import CONTROL, CONTROL_MULTILINE
from services.common.errors import FieldProblem
from services.common.referral_shape import max_lengths
from services.ingest.model import (
    CONSUMER_FIELDS,
    OPT_IN_FIELDS,
    REFERRAL_COLUMNS,
    ReferralInput,
    ReferralRow,
    ValidReferral,
)

MAX_BATCH_SIZE = 10_000
MAX_EXTRA_KEYS = 100

# Longest accepted value per field; anything longer is refused, never cut.
MAX_LENGTHS: dict[str, int] = max_lengths()
MAX_EXTRA_KEY = 64
MAX_EXTRA_VALUE = 2000


class Rule(enum.Enum):
    """What a field's value must be. The rule data every validator shares: this module
    (the reference, which explains each refusal), the compiled scanner (native.py maps
    each rule to its C code) and the columnar Python path (fast_validation.py)."""

    TEXT = "text"  # stripped; one line; at most the field's length (referral_shape.py)
    MULTILINE = "multiline"  # TEXT, not stripped, tab and line breaks allowed
    REQUIRED = "required"  # TEXT, not empty
    PARTNER_KEY = "partner_key"  # REQUIRED: the partner's id, unique per account
    ACCOUNT = "account"  # a UUID: the advertiser account
    CAMPAIGN = "campaign"  # a UUID: the campaign
    EMAIL = "email"  # required, an email address
    BIRTH = "birth"  # empty, or a calendar date from 1900 up to today
    PHONE = "phone"  # empty, or 6-32 of + digits spaces ( ) . - with 6+ digits
    POSTCODE = "postcode"  # empty, or letters, digits, spaces and -
    LANGUAGE = "language"  # empty, or a BCP 47 tag
    COUNTRY = "country"  # empty, or an ISO 3166-1 code (any case; stored upper-case)
    STATE = "state"  # a subdivision of the country when code-shaped and it has any
    IP = "ip"  # empty, or an IPv4 or IPv6 address (stored canonical)
    MOMENT = "moment"  # the opt-in time: required, from 2000 to now (plus skew)
    EXTRA = "extra"  # the free-form attributes

    # Hash by identity in C, not by name in Python (Enum's default): rules are looked up
    # in dicts for every field of every referral.
    __hash__ = object.__hash__


# Each field's rule; a field not named here is Rule.TEXT.
FIELD_RULES: dict[str, Rule] = {
    "account_id": Rule.ACCOUNT, "campaign_id": Rule.CAMPAIGN,
    "partner_referral_id": Rule.PARTNER_KEY, "email": Rule.EMAIL,
    "date_of_birth": Rule.BIRTH, "mobile": Rule.PHONE, "phone": Rule.PHONE,
    "state": Rule.STATE, "postcode": Rule.POSTCODE, "country": Rule.COUNTRY,
    "language": Rule.LANGUAGE, "partner_id": Rule.REQUIRED, "ad_text": Rule.MULTILINE,
    "opted_in_at": Rule.MOMENT, "ip_address": Rule.IP, "extra": Rule.EXTRA,
}  # fmt: skip


def rule_of(name: str) -> Rule:
    """The rule a field follows."""
    return FIELD_RULES.get(name, Rule.TEXT)


# Fields that may hold several lines; everything else must be one line.
_MULTILINE = frozenset(name for name, rule in FIELD_RULES.items() if rule is Rule.MULTILINE)
_NOT_EMPTY = frozenset({Rule.REQUIRED, Rule.EMAIL})
# The order in which the rules past length and control characters are judged.
_FORMAT_ORDER = (
    Rule.REQUIRED, Rule.EMAIL, Rule.BIRTH, Rule.PHONE, Rule.POSTCODE, Rule.LANGUAGE,
    Rule.COUNTRY, Rule.STATE, Rule.MOMENT, Rule.IP,
)  # fmt: skip
# Patterns are applied with fullmatch: `$` would also accept a trailing newline.
# Pragmatic address syntax: one @, a dotted domain, no spaces or quotes.
EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}"
)
_PHONE = re.compile(r"\+?[0-9 ().-]{6,32}")
# _PHONE plus "at least six digits", in one match.
PHONE_WITH_DIGITS = re.compile(r"(?=(?:[^0-9]*[0-9]){6})\+?[0-9 ().-]{6,32}")
POSTCODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]*")
LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
EXTRA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # not \d: it matches other scripts' digits

COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)
_SUBDIVISIONS = frozenset(s.code for s in pycountry.subdivisions)
COUNTRIES_WITH_SUBDIVISIONS = frozenset(code.split("-")[0] for code in _SUBDIVISIONS)
# Some subdivision names look like codes ("Zug", "Goa"); they pass as names.
_SUBDIVISION_NAMES = frozenset((s.country_code, s.name.casefold()) for s in pycountry.subdivisions)
_STATE_CODE = re.compile(r"(?:[A-Za-z]{2}-)?[A-Za-z0-9]{1,3}")

OPT_IN_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
CLOCK_SKEW = timedelta(minutes=5)


def _problem(path: str, code: str, message: str) -> FieldProblem:
    return FieldProblem(field=path, code=code, message=message)


def _check_text(path: str, name: str, value: str, problems: list[FieldProblem]) -> bool:
    """Length and control characters; True when the value may be checked further."""
    limit = MAX_LENGTHS[name]
    if len(value) > limit:
        problems.append(_problem(path, "TOO_LONG", f"at most {limit} characters, got {len(value)}"))
        return False
    pattern = CONTROL_MULTILINE if name in _MULTILINE else CONTROL
    found = pattern.search(value)
    if found:
        problems.append(
            _problem(
                path,
                "CONTROL_CHARACTER",
                f"control character U+{ord(found.group()):04X} at position {found.start()}",
            )
        )
        return False
    return True


def _checked_texts(prefix: str, clean: dict[str, str], problems: list[FieldProblem]) -> set[str]:
    """Names of the non-empty values that pass length and control-character checks."""
    # Fast path for the usual row: one search over all values, then lengths only.
    if not CONTROL.search("".join(clean.values())):
        fine = set()
        for name, value in clean.items():
            if value:
                limit = MAX_LENGTHS[name]
                if len(value) > limit:
                    problems.append(
                        _problem(
                            prefix + name,
                            "TOO_LONG",
                            f"at most {limit} characters, got {len(value)}",
                        )
                    )
                else:
                    fine.add(name)
        return fine
    return {
        name
        for name, value in clean.items()
        if value and _check_text(prefix + name, name, value, problems)
    }


@lru_cache(maxsize=4096)
def _uuid_or_none(value: str) -> UUID | None:
    # Batches repeat the same account and campaign ids: parse each once.
    try:
        return UUID(value)
    except ValueError:
        return None


def _parse_uuid(path: str, value: str, problems: list[FieldProblem]) -> UUID | None:
    if not value:
        problems.append(_problem(path, "REQUIRED", "is required"))
        return None
    parsed = _uuid_or_none(value)
    if parsed is None:
        problems.append(_problem(path, "INVALID_FORMAT", f"must be a UUID, got {value[:64]!r}"))
    return parsed


def canonical_ip(value: str) -> str | None:
    """The address in canonical form, or None when it is not one inet accepts."""
    if IPV4.fullmatch(value):  # the common case, already canonical
        return value
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    # A scoped IPv6 address (fe80::1%eth0) names a local interface, and inet refuses it.
    if getattr(address, "scope_id", None):
        return None
    return str(address)


def parse_birth_date(
    value: str, today: date, problems: list[FieldProblem], path: str = "consumer.date_of_birth"
) -> date | None:
    """The date of birth, or None with the problem added."""
    if not _DATE.fullmatch(value):
        problems.append(_problem(path, "INVALID_FORMAT", "must be a date as YYYY-MM-DD"))
        return None
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        problems.append(_problem(path, "INVALID_DATE", f"{value} is not a calendar date"))
        return None
    if parsed > today:
        problems.append(_problem(path, "OUT_OF_RANGE", "must not be in the future"))
        return None
    if parsed.year < 1900:
        problems.append(_problem(path, "OUT_OF_RANGE", "must be in 1900 or later"))
        return None
    return parsed


@dataclass(slots=True)
class _Checked:
    """One message's values after the rules: as stored, with the typed ones apart."""

    clean: dict[str, str]
    birth: date | None = None
    ip: str | None = None


# Values these patterns accept need no further look (the usual case, checked first).
_VALID = {
    Rule.EMAIL: EMAIL, Rule.PHONE: PHONE_WITH_DIGITS, Rule.POSTCODE: POSTCODE,
    Rule.LANGUAGE: LANGUAGE,
}  # fmt: skip


def _check_fields(
    prefix: str,
    fields: tuple[str, ...],
    raw: dict[str, str],
    today: date,
    problems: list[FieldProblem],
    check_moment: Callable[[], None] | None = None,
) -> _Checked:
    """Every rule of FIELD_RULES on one message's `fields` (`prefix`: its path); a field
    missing from `raw` is empty."""
    clean = {name: value if name in _MULTILINE else value.strip() for name, value in raw.items()}
    fine = _checked_texts(prefix, clean, problems)
    checked = _Checked(clean)
    country = ""
    for rule, name, valid, required in _format_plan(fields):
        if rule is Rule.MOMENT:
            if check_moment is not None:
                check_moment()
            continue
        value = clean.get(name, "")
        if rule is Rule.COUNTRY:
            country = value.upper()
        if not value:
            if required:
                problems.append(_problem(prefix + name, "REQUIRED", "is required"))
        elif name in fine and (valid is None or not valid.fullmatch(value)):
            _check_format(rule, prefix + name, value, country, today, checked, problems)
    return checked


_PlanStep = tuple[Rule, str, "re.Pattern[str] | None", bool]


@lru_cache(maxsize=8)
def _format_plan(fields: tuple[str, ...]) -> tuple[_PlanStep, ...]:
    """The format rules to apply to `fields`, in _FORMAT_ORDER: (rule, field, a pattern
    that settles a valid value at once, whether empty is refused); the moment once."""
    plan: list[_PlanStep] = []
    for rule in _FORMAT_ORDER:
        if rule is Rule.MOMENT:
            plan.append((rule, "", None, False))
            continue
        for name in fields:
            if rule_of(name) is rule:
                plan.append((rule, name, _VALID.get(rule), rule in _NOT_EMPTY))
    return tuple(plan)


def _email(path: str, value: str, checked: _Checked, problems: list[FieldProblem]) -> None:
    problems.append(_problem(path, "INVALID_FORMAT", f"{value[:64]!r} is not an email address"))


def _phone(path: str, value: str, checked: _Checked, problems: list[FieldProblem]) -> None:
    problems.append(_problem(path, "INVALID_FORMAT", "must be a phone number (6+ digits)"))


def _postcode(path: str, value: str, checked: _Checked, problems: list[FieldProblem]) -> None:
    problems.append(_problem(path, "INVALID_FORMAT", "letters, digits, spaces and - only"))


def _language(path: str, value: str, checked: _Checked, problems: list[FieldProblem]) -> None:
    problems.append(_problem(path, "INVALID_FORMAT", "must be a language tag like en-GB"))


def _ip(path: str, value: str, checked: _Checked, problems: list[FieldProblem]) -> None:
    checked.ip = canonical_ip(value)
    if checked.ip is None:
        problems.append(_problem(path, "INVALID_FORMAT", "must be an IPv4 or IPv6 address"))


# What a value its rule's pattern (_VALID) did not settle gets: a problem, or its stored form.
_FORMAT_CHECKS = {
    Rule.EMAIL: _email, Rule.PHONE: _phone, Rule.POSTCODE: _postcode,
    Rule.LANGUAGE: _language, Rule.IP: _ip,
}  # fmt: skip


def _check_format(
    rule: Rule,
    path: str,
    value: str,
    country: str,
    today: date,
    checked: _Checked,
    problems: list[FieldProblem],
) -> None:
    """One non-empty value that passed length and control characters, by its rule."""
    found = _FORMAT_CHECKS.get(rule)
    if found is not None:
        found(path, value, checked, problems)
    elif rule is Rule.BIRTH:
        checked.birth = parse_birth_date(value, today, problems, path)
    elif rule is Rule.COUNTRY:
        if country not in COUNTRIES:
            problems.append(
                _problem(path, "UNKNOWN_CODE", f"{country!r} is not an ISO 3166-1 code")
            )
        else:
            checked.clean[path.rsplit(".", 1)[-1]] = country
    elif rule is Rule.STATE and country in COUNTRIES_WITH_SUBDIVISIONS:
        check_state(checked.clean, country, problems, path.rsplit(".", 1)[-1], path)


def check_state(
    clean: dict[str, str],
    country: str,
    problems: list[FieldProblem],
    name: str = "state",
    path: str = "consumer.state",
) -> None:
    """A code-shaped state must be a subdivision of the country; names pass as given."""
    state = clean[name]
    if not _STATE_CODE.fullmatch(state) or (country, state.casefold()) in _SUBDIVISION_NAMES:
        return
    code = state.upper() if "-" in state else f"{country}-{state.upper()}"
    if not code.startswith(f"{country}-") or code not in _SUBDIVISIONS:
        problems.append(
            _problem(
                path, "UNKNOWN_CODE", f"{state!r} is not an ISO 3166-2 subdivision of {country}"
            )
        )
    else:
        clean[name] = code.split("-", 1)[1]


def _opted_in_at_check(
    opted_in_at: datetime | None, now: datetime, problems: list[FieldProblem]
) -> Callable[[], None]:
    def check() -> None:
        path = "opt_in.opted_in_at"
        if opted_in_at is None:
            if not any(p.field == path for p in problems):  # else undecodable, said already
                problems.append(_problem(path, "REQUIRED", "is required"))
        elif opted_in_at > now + CLOCK_SKEW:
            problems.append(_problem(path, "OUT_OF_RANGE", "must not be in the future"))
        elif opted_in_at < OPT_IN_EARLIEST:
            problems.append(_problem(path, "OUT_OF_RANGE", "must be in 2000 or later"))

    return check


def _check_extra(extra: dict[str, str], problems: list[FieldProblem]) -> None:
    if len(extra) > MAX_EXTRA_KEYS:
        problems.append(
            _problem("extra", "TOO_MANY", f"at most {MAX_EXTRA_KEYS} attributes, got {len(extra)}")
        )
        return
    for key, value in extra.items():
        path = f"extra.{key[:MAX_EXTRA_KEY]}"
        if len(key) > MAX_EXTRA_KEY or not EXTRA_KEY.fullmatch(key):
            problems.append(
                _problem(
                    path, "INVALID_KEY", f"keys are 1-{MAX_EXTRA_KEY} of A-Z a-z 0-9 _ . - chars"
                )
            )
        elif len(value) > MAX_EXTRA_VALUE:
            problems.append(_problem(path, "TOO_LONG", f"at most {MAX_EXTRA_VALUE} characters"))
        elif found := CONTROL_MULTILINE.search(value):
            problems.append(
                _problem(path, "CONTROL_CHARACTER", f"control character U+{ord(found.group()):04X}")
            )


def validate_referral(referral: ReferralInput, now: datetime) -> ValidReferral | list[FieldProblem]:
    """Return the typed referral, or every problem found (never just the first)."""
    problems: list[FieldProblem] = list(referral.decode_problems)
    account_id = _parse_uuid("account_id", referral.account_id.strip(), problems)
    campaign_id = _parse_uuid("campaign_id", referral.campaign_id.strip(), problems)
    partner_id = referral.partner_referral_id.strip()
    if not partner_id:
        problems.append(_problem("partner_referral_id", "REQUIRED", "is required"))
    else:
        _check_text("partner_referral_id", "partner_referral_id", partner_id, problems)
    today = now.date()
    consumer = _check_fields("consumer.", CONSUMER_FIELDS, referral.consumer, today, problems)
    moment = _opted_in_at_check(referral.opted_in_at, now, problems)
    opt_in = _check_fields("opt_in.", OPT_IN_FIELDS, referral.opt_in, today, problems, moment)
    _check_extra(referral.extra, problems)
    if problems or account_id is None or campaign_id is None or referral.opted_in_at is None:
        return problems
    return ValidReferral(
        account_id=account_id,
        campaign_id=campaign_id,
        partner_referral_id=partner_id,
        consumer=consumer.clean,
        date_of_birth=consumer.birth,
        opt_in=opt_in.clean,
        opted_in_at=referral.opted_in_at,
        ip_address=opt_in.ip,
        extra=referral.extra,
    )


def check_batch_size(size: int) -> FieldProblem | None:
    """A problem when a batch is empty or larger than MAX_BATCH_SIZE."""
    if size == 0:
        return _problem("referrals", "EMPTY", "a batch needs at least one referral")
    if size > MAX_BATCH_SIZE:
        return _problem(
            "referrals", "TOO_MANY", f"at most {MAX_BATCH_SIZE} referrals per batch, got {size}"
        )
    return None


def first_occurrences(keys: Iterable[tuple[str, str]]) -> dict[int, int]:
    """Map the index of each repeated (account, partner id) to its first occurrence."""
    seen: dict[tuple[str, str], int] = {}
    repeats: dict[int, int] = {}
    for index, key in enumerate(keys):
        if not key[1]:
            continue
        first = seen.setdefault(key, index)
        if first != index:
            repeats[index] = first
    return repeats


def referral_row(valid: ValidReferral) -> ReferralRow:
    """The stored column values of a validated referral."""
    values: dict[str, str | None] = {
        **valid.consumer,
        **valid.opt_in,
        "account_id": str(valid.account_id),
        "campaign_id": str(valid.campaign_id),
        "partner_referral_id": valid.partner_referral_id,
        "date_of_birth": valid.date_of_birth.isoformat() if valid.date_of_birth else None,
        "opted_in_at": valid.opted_in_at.isoformat(),
        "ip_address": valid.ip_address,
        "extra": JSON_ENCODER.encode(valid.extra),
    }
    return ReferralRow._make([values.get(name, "") for name in REFERRAL_COLUMNS])

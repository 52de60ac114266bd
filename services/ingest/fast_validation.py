"""The fast path of validation: accept a clean referral in one pass, or defer.

Most referrals are clean. For those, `quick_row` checks every rule with a few C-level
passes (strip, length, one control-character search for all fields) and returns the
stored column values. Anything unusual — a problem, or a value that needs normalising —
returns None, and the caller runs `validate_referral`, which reports every problem
precisely. The rule helpers are shared, and a test checks on mutated inputs that a row
accepted here is accepted there with the same values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from operator import le
from uuid import UUID

from services.common.errors import FieldProblem
from services.ingest.model import CONSUMER_FIELDS, OPT_IN_FIELDS, ReferralRow
from services.ingest.validation import (
    _CONTROL,
    _CONTROL_MULTILINE,
    _COUNTRIES,
    _COUNTRIES_WITH_SUBDIVISIONS,
    _EMAIL,
    _EXTRA_KEY,
    _JSON,
    _LANGUAGE,
    _PHONE,
    _POSTCODE,
    CLOCK_SKEW,
    MAX_EXTRA_KEY,
    MAX_EXTRA_KEYS,
    MAX_EXTRA_VALUE,
    MAX_LENGTHS,
    OPT_IN_EARLIEST,
    _canonical_ip,
    _check_state,
    _parse_birth_date,
)

# Opt-in text fields in the order callers pass them (OPT_IN_FIELDS less opted_in_at).
OPT_IN_TEXT: tuple[str, ...] = tuple(f for f in OPT_IN_FIELDS if f != "opted_in_at")
_CONSUMER_LIMITS = tuple(MAX_LENGTHS[f] for f in CONSUMER_FIELDS)
_OPT_IN_LIMITS = tuple(MAX_LENGTHS[f] for f in OPT_IN_TEXT)
_AD_TEXT = OPT_IN_TEXT.index("ad_text")
_IP = OPT_IN_TEXT.index("ip_address")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST_S = int(OPT_IN_EARLIEST.timestamp())
_NANOS = 1_000_000_000
_KEY = rf"[A-Za-z_][A-Za-z0-9_.-]{{0,{MAX_EXTRA_KEY - 1}}}"
_EXTRA_KEYS = re.compile(f"{_KEY}(?:\x00{_KEY})*")


@lru_cache(maxsize=4096)
def canonical_uuid(value: str) -> str | None:
    """The value when it is already a UUID in canonical form, else None."""
    try:
        canonical = str(UUID(value))
    except ValueError:
        return None
    return canonical if canonical == value else None


def _phone_ok(value: str) -> bool:
    return bool(_PHONE.fullmatch(value)) and sum(map(str.isdigit, value)) >= 6


def _consumer_ok(values: list[str], today: date) -> bool:
    """Field rules for stripped consumer values; may normalise `state` in place."""
    (email, _title, _first, _last, _gender, birth, mobile, phone, _a1, _a2, _city, state,
     postcode, country, language) = values  # fmt: skip
    if not email or not _EMAIL.fullmatch(email):
        return False
    problems: list[FieldProblem] = []
    if birth and _parse_birth_date(birth, today, problems) is None:
        return False
    if (mobile and not _phone_ok(mobile)) or (phone and not _phone_ok(phone)):
        return False
    if postcode and not _POSTCODE.fullmatch(postcode):
        return False
    if language and not _LANGUAGE.fullmatch(language):
        return False
    if country and country not in _COUNTRIES:  # lower case too: the slow path normalises
        return False
    if state and country in _COUNTRIES_WITH_SUBDIVISIONS:
        clean = {"state": state}
        _check_state(clean, country, problems)
        if problems:
            return False
        values[11] = clean["state"]
    return True


@dataclass(frozen=True, slots=True)
class Clock:
    """One reading of the clock, shared by every row of a batch."""

    now: datetime
    latest: datetime  # the latest acceptable opt-in time
    latest_s: float
    today: date

    @classmethod
    def at(cls, now: datetime) -> Clock:
        """The bounds that hold at `now`."""
        latest = now + CLOCK_SKEW
        return cls(now, latest, latest.timestamp(), now.date())


def _extra_json(extra: Mapping[str, str]) -> str | None:
    if not extra:
        return "{}"
    if len(extra) > MAX_EXTRA_KEYS:
        return None
    # Usual case in three C-level passes; anything odd is checked key by key.
    values = extra.values()
    if (
        _EXTRA_KEYS.fullmatch("\x00".join(extra))
        and max(map(len, values)) <= MAX_EXTRA_VALUE
        and not _CONTROL_MULTILINE.search("".join(values))
    ):
        return _JSON.encode(dict(extra))
    for key, value in extra.items():
        if (
            len(key) > MAX_EXTRA_KEY
            or not _EXTRA_KEY.fullmatch(key)
            or len(value) > MAX_EXTRA_VALUE
            or _CONTROL_MULTILINE.search(value)
        ):
            return None
    return _JSON.encode(dict(extra))


def quick_row(
    account_id: str,
    campaign_id: str,
    partner_referral_id: str,
    consumer: Sequence[str],
    opt_in: Sequence[str],
    opted_in_at: tuple[int, int] | None,
    extra: Mapping[str, str],
    clock: Clock,
) -> ReferralRow | None:
    """The stored values of a clean referral, or None when validate_referral must decide.

    `consumer` follows CONSUMER_FIELDS, `opt_in` follows OPT_IN_TEXT, `opted_in_at` is a
    protobuf Timestamp's (seconds, nanos).
    """
    account = canonical_uuid(account_id)
    campaign = canonical_uuid(campaign_id)
    partner_id = partner_referral_id.strip()
    if account is None or campaign is None or not partner_id:
        return None
    if opted_in_at is None:
        return None
    seconds, nanos = opted_in_at
    if not 0 <= nanos < _NANOS or not _EARLIEST_S <= seconds <= clock.latest_s:
        return None
    moment = _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    if moment > clock.latest:
        return None
    cons = list(map(str.strip, consumer))
    opts = list(map(str.strip, opt_in))
    ad_text = opts[_AD_TEXT] = opt_in[_AD_TEXT]
    if not (
        len(partner_id) <= MAX_LENGTHS["partner_referral_id"]
        and all(map(le, map(len, cons), _CONSUMER_LIMITS))
        and all(map(le, map(len, opts), _OPT_IN_LIMITS))
    ):
        return None
    opts[_AD_TEXT] = ""
    if _CONTROL.search(partner_id + "".join(cons) + "".join(opts)):
        return None
    if ad_text and _CONTROL_MULTILINE.search(ad_text):
        return None
    opts[_AD_TEXT] = ad_text
    if not opts[0] or not _consumer_ok(cons, clock.today):  # opt_in.partner_id is required
        return None
    ip: str | None = None
    if opts[_IP]:
        ip = _canonical_ip(opts[_IP])
        if ip is None:
            return None
    extra_json = _extra_json(extra)
    if extra_json is None:
        return None
    values = (
        account, campaign, partner_id, *cons[:5], cons[5] or None, *cons[6:],
        *opts[:5], moment.isoformat(), ip, opts[6], opts[7], extra_json,
    )  # fmt: skip
    return ReferralRow._make(values)

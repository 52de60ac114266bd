"""Account rules without a server: ids, names, time zones, page sizes and page tokens."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common.errors import InvalidArgumentError
from services.common.ids import parse_id
from services.common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_size
from services.ingest.accounts import (
    MAX_NAME,
    check_name,
    check_time_zone,
    decode_page_token,
    encode_page_token,
)


def refused(error: pytest.ExceptionInfo[InvalidArgumentError]) -> list[tuple[str, str]]:
    return [(p.field, p.code) for p in error.value.problems]


def test_page_token_roundtrips_position_to_the_microsecond() -> None:
    created = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    item = uuid.uuid4()

    assert decode_page_token(encode_page_token(created, item)) == (created, item)


def test_page_token_keeps_the_instant_of_other_offsets() -> None:
    created = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=-5)))
    item = uuid.uuid4()

    decoded = decode_page_token(encode_page_token(created, item))

    assert decoded is not None
    assert decoded[0] == created


def test_page_token_is_url_safe_text() -> None:
    token = encode_page_token(datetime.now(UTC), uuid.uuid4())

    assert token.isascii()
    assert not set(token) & {"+", "/", " ", "|"}


def test_empty_page_token_means_the_first_page() -> None:
    assert decode_page_token("") is None


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "%%%",
        base64.urlsafe_b64encode(b"yesterday|" + str(uuid.uuid4()).encode()).decode(),
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|not-a-uuid").decode(),
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00|" + str(uuid.uuid4()).encode()).decode(),
    ],
)
def test_page_token_not_issued_by_the_api_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        decode_page_token(token)

    assert refused(caught) == [("page_token", "INVALID_FORMAT")]


def test_page_size_zero_means_the_default() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE


@pytest.mark.parametrize("size", [1, 50, MAX_PAGE_SIZE])
def test_page_size_within_bounds_is_kept(size: int) -> None:
    assert page_size(size) == size


@pytest.mark.parametrize("size", [-1, MAX_PAGE_SIZE + 1])
def test_page_size_out_of_bounds_is_refused_naming_the_bounds(size: int) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        page_size(size)

    assert refused(caught) == [("page_size", "OUT_OF_RANGE")]
    assert str(MAX_PAGE_SIZE) in caught.value.message


@pytest.mark.parametrize("zone", ["UTC", "Europe/London", "America/Argentina/Buenos_Aires"])
def test_iana_time_zones_are_accepted(zone: str) -> None:
    assert check_time_zone(zone) == zone


def test_blank_time_zone_means_utc() -> None:
    assert check_time_zone("  ") == "UTC"


@pytest.mark.parametrize(
    "zone",
    [
        "Mars/Olympus_Mons",
        "utc",
        "America",
        "../../etc/passwd",
        "/etc/localtime",
        "localtime",
        "posixrules",
        "zone.tab",
        "UTC\x00",
        "+05:00",
    ],
)
def test_unknown_time_zones_are_refused(zone: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_time_zone(zone)

    assert refused(caught) == [("time_zone", "UNKNOWN_CODE")]


def test_refusal_of_a_huge_time_zone_does_not_echo_it_whole() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_time_zone("x" * 10_000)

    assert len(caught.value.message) < 200


def test_name_is_trimmed() -> None:
    assert check_name("  Acme Ltd \t") == "Acme Ltd"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", "REQUIRED"),
        ("   ", "REQUIRED"),
        ("x" * (MAX_NAME + 1), "TOO_LONG"),
        ("Acme\nLtd", "CONTROL_CHARACTER"),
        ("Acme\x00", "CONTROL_CHARACTER"),
        ("Ac\x85me", "CONTROL_CHARACTER"),
    ],
)
def test_bad_names_are_refused(name: str, code: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_name(name)

    assert refused(caught) == [("name", code)]


def test_name_at_its_limit_is_accepted() -> None:
    assert check_name("x" * MAX_NAME) == "x" * MAX_NAME


def test_parse_id_accepts_a_uuid() -> None:
    value = uuid.uuid4()

    assert parse_id("id", str(value)) == value


def test_parse_id_refuses_a_malformed_uuid_naming_the_field() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_id("account_id", "acme")

    assert refused(caught) == [("account_id", "INVALID_FORMAT")]


def test_parse_id_requires_a_value_unless_optional() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_id("id", "")

    assert refused(caught) == [("id", "REQUIRED")]
    assert isinstance(parse_id("id", "", required=False), uuid.UUID)

"""Render benchmark: 1,000,000 referrals from PostgreSQL through a 20-column layout with six
custom fields to CSV, beside `COPY (the same SELECT) TO STDOUT CSV` measured in the same run.

Each render runs in its own process so that its peak RSS is its own. Run with
`python -m tests.bench.render` (or `make bench`); it creates and drops a scratch database.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import phonenumbers

from services.common.db import create_pool
from services.common.layouts.compiler import compile_layout
from services.common.layouts.model import (
    CaseMode,
    CaseStep,
    Column,
    CustomFieldSpec,
    DateKind,
    DateStep,
    HashStep,
    LayoutSpec,
    MapEntry,
    PhoneStep,
    TemplateStep,
    TrimStep,
    ValueMapStep,
)
from services.common.layouts.phones import phone_cache_info
from services.common.layouts.render import render_columns
from services.common.localdb import resolve_admin_dsn
from services.common.migrate import migrate
from services.common.referral_rows import QUERIES, ReferralRowReader, range_arguments
from tests.bench.scratch import scratch_database
from tests.bench.table import BenchRow, format_table

TOTAL_ROWS = 1_000_000
SMALL_ROWS = 100_000
DISTINCT_PHONES = 50_000
SEED_CHUNK = 20_000

CUSTOM_FIELDS = {
    spec.name: spec
    for spec in (
        CustomFieldSpec(
            "gender_label",
            "gender",
            (
                ValueMapStep(
                    (MapEntry("M", "Male"), MapEntry("F", "Female"), MapEntry("X", "Diverse")),
                    case_insensitive=True,
                    empty_value="Unknown",
                ),
            ),
        ),
        CustomFieldSpec(
            "opted_in_local",
            "opted_in_at",
            (
                DateStep(
                    output=DateKind.PATTERN,
                    output_pattern="%d/%m/%Y %H:%M",
                    output_time_zone="Europe/London",
                ),
            ),
        ),
        CustomFieldSpec(
            "full_name",
            "",
            (TemplateStep("{title} {first_name} {last_name}"), TrimStep(collapse_spaces=True)),
        ),
        CustomFieldSpec("email_sha256", "email", (HashStep(),)),
        CustomFieldSpec("city_upper", "city", (CaseStep(CaseMode.UPPER),)),
        CustomFieldSpec("mobile_e164", "mobile", (PhoneStep("GB", country_field="country"),)),
    )
}
STANDARD_COLUMNS = (
    "seq", "email", "title", "first_name", "last_name", "date_of_birth", "address_line1",
    "address_line2", "city", "postcode", "country", "campaign_name", "partner_id", "ip_address",
)  # fmt: skip
LAYOUT = LayoutSpec(
    tuple(Column(name, name) for name in (*STANDARD_COLUMNS, *CUSTOM_FIELDS)),
)

_FIRST = [
    "Ada",
    "Zoë",
    "José",
    "Mary-Kate",
    "Siobhán",
    "Li",
    "Noah",
    "Olivia",
    "Émile",
    "Ben",
    "Fatima",
    "Jürgen",
    "Amélie",
    "Oscar",
    "Isla",
    "Mohammed",
    "Chloé",
    "Tomás",
    "Ava",
]
_LAST = [
    "Lovelace",
    "O'Brien",
    "Ørsted",
    "Smith",
    "García",
    "Nguyen",
    "Müller",
    "Jones",
    "van der Berg",
    "Kowalski",
    "Brown",
    "Dubois",
    "Murphy",
    "Rossi",
    "Kim",
    "Taylor",
]
_CITIES = [
    ("London", "GB"),
    ("Manchester", "GB"),
    ("Edinburgh", "GB"),
    ("Cardiff", "GB"),
    ("New York", "US"),
    ("San Francisco", "US"),
    ("Chicago", "US"),
    ("Dublin", "IE"),
    ("Cork", "IE"),
    ("Bristol", "GB"),
]
_CITIES_IN = {k: [c for c, country in _CITIES if country == k] for _, k in _CITIES}
_AREA = {"US": ["212", "415", "646", "312", "617", "202"], "IE": ["83", "85", "86", "87"]}
_COLUMNS = (
    "seq", "account_id", "campaign_id", "partner_referral_id", "received_at", "email", "title",
    "first_name", "last_name", "gender", "date_of_birth", "mobile", "phone", "address_line1",
    "address_line2", "city", "state", "postcode", "country", "language", "partner_id",
    "publisher_id", "creative_id", "ad_text", "audience", "opted_in_at", "ip_address",
    "user_agent", "browser", "extra",
)  # fmt: skip
_NULLABLE = {"date_of_birth", "ip_address"}


def _phone(rng: random.Random, country: str) -> str:
    if rng.random() < 0.02:
        return rng.choice(["n/a", "12345", "0000", "+1 (555) CALL-NOW"])
    if country in _AREA:
        area = rng.choice(_AREA[country])
        if country == "US":
            number = f"{rng.randint(201, 989)}-{rng.randint(1000, 9999)}"
            return rng.choice([f"({area}) {number}", f"+1 {area} {number}", f"{area}.{number}"])
        return f"0{area} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
    digits = f"7{rng.randint(4, 9)}{rng.randint(10, 99)}{rng.randint(100000, 999999)}"
    return rng.choice(
        [f"0{digits[:4]} {digits[4:]}", f"+44 {digits[:4]} {digits[4:]}", f"44{digits}"]
    )


def _seed_lines(account: str, campaigns: list[str], total: int) -> AsyncIterator[bytes]:
    """CSV for COPY into referrals, generated in chunks (varied, partly messy data)."""
    rng = random.Random(20240601)
    phones: list[tuple[str, str]] = []
    for _ in range(DISTINCT_PHONES):
        _, country = rng.choice(_CITIES)
        phones.append((_phone(rng, country), country))
    start = datetime(2024, 1, 1, tzinfo=UTC)

    async def chunks() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for first in range(0, total, SEED_CHUNK):
            rows = []
            for i in range(first, min(first + SEED_CHUNK, total)):
                given, family = rng.choice(_FIRST), rng.choice(_LAST)
                mobile, country = phones[rng.randrange(DISTINCT_PHONES)]
                city = rng.choice(_CITIES_IN[country])
                ip = f"203.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
                opted = start + timedelta(seconds=rng.randrange(366 * 86400))
                dob = date(1940, 1, 1) + timedelta(days=rng.randrange(65 * 365))
                rows.append((
                    i + 1, account, campaigns[i % len(campaigns)], f"ref-{i}",
                    (opted + timedelta(seconds=2)).isoformat(),
                    f"{given.lower()}.{family.lower().replace(' ', '')}{i}@example.com",
                    rng.choice(["Mr", "Ms", "Dr", "Mx", ""]), given, family,
                    rng.choice(["M", "F", "m", "f", "X", "", "female"]),
                    "" if rng.random() < 0.1 else dob.isoformat(), mobile, "",
                    f"{rng.randint(1, 300)} {rng.choice(['High St', 'Main Street', 'Rue Neuve'])}",
                    rng.choice(["", "", "Flat 2, Block B"]), city, "",
                    f"{rng.choice('ABCDEFGHJK')}{rng.randint(1, 99)} {rng.randint(1, 9)}XY",
                    country, "en", f"partner-{rng.randint(1, 20)}", "", "",
                    rng.choice(["Yes, send me offers.", "I agree.\nUnsubscribe any time."]),
                    "", opted.isoformat(),
                    "" if rng.random() < 0.05 else ip,
                    "Mozilla/5.0", rng.choice(["Firefox", "Chrome", "Safari"]),
                    json.dumps({"q1": rng.choice(["yes", "no"])}),
                ))  # fmt: skip
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(rows)
            yield buffer.getvalue().encode()

    return chunks()


async def _seed(dsn: str, total: int) -> str:
    """Migrate, create an account with campaigns and COPY `total` referrals; the account id."""
    await migrate(dsn)
    account = str(uuid.uuid4())
    campaigns = [str(uuid.uuid4()) for _ in range(5)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO accounts (id, name, time_zone) VALUES ($1, 'Bench', 'Europe/London')",
            uuid.UUID(account),
        )
        for n, campaign in enumerate(campaigns):
            await conn.execute(
                "INSERT INTO campaigns (id, account_id, name) VALUES ($1, $2, $3)",
                uuid.UUID(campaign),
                uuid.UUID(account),
                f"Campaign {n}",
            )
        await conn.copy_to_table(
            "referrals",
            source=_seed_lines(account, campaigns, total),
            columns=list(_COLUMNS),
            format="csv",
            force_not_null=[c for c in _COLUMNS if c not in _NULLABLE],
        )
        await conn.execute("SELECT setval('referral_seq', $1)", total)
        await conn.execute("VACUUM ANALYZE referrals")
    finally:
        await conn.close()
    return account


async def _raw_copy(dsn: str, account: str, through: int) -> tuple[float, int]:
    """Seconds and bytes for COPY of the renderer's own SELECT (same fields) to CSV."""
    fields = list(compile_layout(LAYOUT, CUSTOM_FIELDS).row_fields)
    conn = await asyncpg.connect(dsn)
    size = 0

    async def count(data: bytes) -> None:
        nonlocal size
        size += len(data)

    try:
        started = time.perf_counter()
        async with conn.transaction(readonly=True):
            await conn.execute(QUERIES["render_session"])
            await conn.copy_from_query(
                QUERIES["referral_rows_in_range"],
                *range_arguments(uuid.UUID(account), 0, through, None, fields, None),
                output=count,
                format="csv",
            )
        return time.perf_counter() - started, size
    finally:
        await conn.close()


async def _render(dsn: str, account: str, through: int) -> dict[str, float]:
    """Render (0, through] to CSV into a byte counter; figures as a dict."""
    async with create_pool(dsn, min_size=1, max_size=2) as pool:
        reader = ReferralRowReader(pool)
        context = await reader.render_context(uuid.UUID(account))
        assert context is not None
        started = time.perf_counter()
        layout = compile_layout(LAYOUT, CUSTOM_FIELDS, context)
        size = 0
        # Only the fields the layout uses, as a delivery reads them, and as the baseline
        # COPY above selects them.
        rows = reader.rows_in_range(uuid.UUID(account), 0, through, fields=layout.row_fields)
        async for chunk in render_columns(layout, rows):
            size += len(chunk)
        seconds = time.perf_counter() - started
    hits, misses, _ = phone_cache_info()
    return {
        "rows": layout.rows_done,
        "seconds": seconds,
        "bytes": size,
        "problems": layout.problems.total,
        "phone_hits": hits,
        "phone_misses": misses,
        "max_rss_kb": _peak_rss_kb(),
    }


def _peak_rss_kb() -> float:
    """This process's peak RSS. VmHWM, because ru_maxrss of a child started with fork and
    exec still counts the parent's pages from before the exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _render_in_child(dsn: str, account: str, through: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.bench.render", "--child", dsn, account, str(through)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def _uncached_phone_rate() -> float:
    """Numbers per second phonenumbers parses, validates and formats without a cache."""
    rng = random.Random(7)
    numbers = [_phone(rng, rng.choice(["GB", "US"])) for _ in range(5000)]
    started = time.perf_counter()
    for text in numbers:
        try:
            number = phonenumbers.parse(text, "GB")
            if phonenumbers.is_valid_number(number):
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        except phonenumbers.NumberParseException:
            pass
    return len(numbers) / (time.perf_counter() - started)


async def run(dsn: str) -> list[BenchRow]:
    """Seed a scratch database, measure, drop it; the table rows."""
    async with scratch_database(dsn, "render") as scratch:
        started = time.perf_counter()
        account = await _seed(scratch, TOTAL_ROWS)
        seed_seconds = time.perf_counter() - started
        copy_times = [await _raw_copy(scratch, account, TOTAL_ROWS) for _ in range(2)]
        small = _render_in_child(scratch, account, SMALL_ROWS)
        full = _render_in_child(scratch, account, TOTAL_ROWS)
        copy_times.append(await _raw_copy(scratch, account, TOTAL_ROWS))
    copy_seconds, copy_bytes = min(copy_times)
    copy_rate = TOTAL_ROWS / copy_seconds
    lookups = full["phone_hits"] + full["phone_misses"]
    return [
        BenchRow(
            "render 1M rows -> CSV (20 cols, 6 custom)",
            full["rows"] / full["seconds"],
            "rows/s",
            "COPY (same SELECT) TO STDOUT CSV",
            copy_rate,
            ">= 100,000 rows/s; aim >= 0.2x",
        ),
        BenchRow(
            "render 100k rows -> CSV (fresh process)",
            small["rows"] / small["seconds"],
            "rows/s",
            "COPY (same SELECT) TO STDOUT CSV",
            copy_rate,
        ),
        BenchRow(
            "output size, 1M rows", full["bytes"] / 1e6, "MB", "raw COPY CSV", copy_bytes / 1e6
        ),
        BenchRow("peak RSS, render 100k rows", small["max_rss_kb"] / 1024, "MB"),
        BenchRow(
            "peak RSS, render 1M rows",
            full["max_rss_kb"] / 1024,
            "MB",
            "peak RSS at 100k rows",
            small["max_rss_kb"] / 1024,
            "flat (ratio ~1)",
        ),
        BenchRow(
            f"phone LRU hit rate, 1M rows ({DISTINCT_PHONES:,} distinct)",
            100 * full["phone_hits"] / lookups if lookups else 0.0,
            "%",
        ),
        BenchRow(
            "phonenumbers uncached (parse+validate+format)", _uncached_phone_rate(), "numbers/s"
        ),
        BenchRow("values a step could not handle, 1M rows", full["problems"], "values"),
        BenchRow("seeding 1M rows (generate + COPY + VACUUM ANALYZE)", seed_seconds, "s"),
    ]


def main() -> int:
    """Entry point: the table, or (with --child) one render's figures as JSON."""
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        dsn, account, through = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(asyncio.run(_render(dsn, account, through))))
        return 0
    print(format_table("render (PostgreSQL -> CSV)", asyncio.run(run(resolve_admin_dsn()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Deterministic, plausible synthetic referrals for the demo and the benchmarks.

Every value is fictional: e-mail domains are the reserved example.com/.net/.org, IP
addresses come from the documentation ranges, phone numbers from ranges set aside for
fiction where a country has one.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from services.common.gen.handoff.ingest.v1 import referral_pb2

# Opt-ins fall in this window: long past, so never "in the future" on any sane clock.
OPT_IN_FROM = datetime(2024, 1, 1, tzinfo=UTC)
OPT_IN_DAYS = 366
BIRTH_FROM = date(1950, 1, 1)
BIRTH_DAYS = (date(2005, 12, 31) - BIRTH_FROM).days


@dataclass(frozen=True)
class _Place:
    country: str
    state: str
    city: str
    language: str
    names: str  # key of _FIRST_NAMES / _LAST_NAMES


_PLACES = (
    _Place("US", "CA", "Los Angeles", "en-US", "en"),
    _Place("US", "CA", "San Francisco", "en-US", "en"),
    _Place("US", "NY", "New York", "en-US", "en"),
    _Place("US", "TX", "Austin", "en-US", "en"),
    _Place("US", "FL", "Miami", "es-US", "es"),
    _Place("US", "WA", "Seattle", "en-US", "en"),
    _Place("US", "IL", "Chicago", "en-US", "en"),
    _Place("US", "MA", "Boston", "en-US", "en"),
    _Place("US", "CO", "Denver", "en-US", "en"),
    _Place("GB", "ENG", "London", "en-GB", "en"),
    _Place("GB", "ENG", "Manchester", "en-GB", "en"),
    _Place("GB", "SCT", "Edinburgh", "en-GB", "en"),
    _Place("GB", "WLS", "Cardiff", "en-GB", "en"),
    _Place("IE", "D", "Dublin", "en-IE", "en"),
    _Place("CA", "ON", "Toronto", "en-CA", "en"),
    _Place("CA", "QC", "Montréal", "fr-CA", "fr"),
    _Place("CA", "BC", "Vancouver", "en-CA", "en"),
    _Place("AU", "NSW", "Sydney", "en-AU", "en"),
    _Place("AU", "VIC", "Melbourne", "en-AU", "en"),
    _Place("NZ", "AUK", "Auckland", "en-NZ", "en"),
    _Place("DE", "BE", "Berlin", "de-DE", "de"),
    _Place("DE", "BY", "München", "de-DE", "de"),
    _Place("DE", "HH", "Hamburg", "de-DE", "de"),
    _Place("FR", "IDF", "Paris", "fr-FR", "fr"),
    _Place("FR", "ARA", "Lyon", "fr-FR", "fr"),
    _Place("NL", "NH", "Amsterdam", "nl-NL", "nl"),
    _Place("ES", "MD", "Madrid", "es-ES", "es"),
    _Place("ES", "CT", "Barcelona", "es-ES", "es"),
)

# (first name, gender as a partner would collect it)
_FIRST_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (
        ("Olivia", "F"), ("Liam", "M"), ("Emma", "F"), ("Noah", "M"), ("Amelia", "F"),
        ("Oliver", "M"), ("Ava", "F"), ("Elijah", "M"), ("Sophia", "F"), ("James", "M"),
        ("Isabella", "F"), ("Lucas", "M"), ("Mia", "F"), ("Ethan", "M"), ("Zoë", "F"),
        ("Siobhán", "F"), ("Aiden", "M"), ("Priya", "F"), ("Wei", "M"), ("Jordan", "X"),
    ),
    "de": (
        ("Mia", "F"), ("Ben", "M"), ("Emilia", "F"), ("Paul", "M"), ("Hannah", "F"),
        ("Jonas", "M"), ("Lena", "F"), ("Lukas", "M"), ("Jürgen", "M"), ("Anna", "F"),
    ),
    "fr": (
        ("Léa", "F"), ("Hugo", "M"), ("Chloé", "F"), ("Louis", "M"), ("Camille", "X"),
        ("Gabriel", "M"), ("Inès", "F"), ("Jules", "M"), ("Amélie", "F"), ("Théo", "M"),
    ),
    "nl": (
        ("Emma", "F"), ("Daan", "M"), ("Julia", "F"), ("Sem", "M"), ("Tess", "F"),
        ("Lars", "M"), ("Sanne", "F"), ("Bram", "M"),
    ),
    "es": (
        ("Lucía", "F"), ("Hugo", "M"), ("Martina", "F"), ("Mateo", "M"), ("Sofía", "F"),
        ("José", "M"), ("Valentina", "F"), ("Diego", "M"), ("Alex", "X"),
    ),
}  # fmt: skip

_LAST_NAMES: dict[str, tuple[str, ...]] = {
    "en": (
        "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
        "Wilson", "Taylor", "Anderson", "Thomas", "Moore", "Martin", "Lee", "Thompson",
        "White", "Harris", "Clark", "O'Brien", "Murphy", "Patel", "Nguyen", "Chen",
    ),
    "de": (
        "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
        "Schulz", "Hoffmann",
    ),
    "fr": (
        "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
        "Leroy", "Lefèvre", "Tremblay", "Gagnon",
    ),
    "nl": ("de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit"),
    "es": (
        "García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez",
        "Pérez", "Gómez",
    ),
}  # fmt: skip

_STREETS: dict[str, tuple[str, ...]] = {
    "en": ("Main Street", "Oak Avenue", "Maple Drive", "High Street", "Church Road",
           "Park Lane", "Elm Street", "Station Road", "Victoria Road", "Cedar Court"),
    "de": ("Hauptstraße", "Bahnhofstraße", "Gartenweg", "Schillerstraße", "Lindenallee"),
    "fr": ("rue de la Paix", "avenue Victor Hugo", "rue du Moulin", "boulevard Voltaire",
           "rue Saint-Denis"),
    "nl": ("Kerkstraat", "Dorpsstraat", "Molenweg", "Prinsengracht", "Stationsplein"),
    "es": ("Calle Mayor", "Gran Vía", "Calle de Alcalá", "Avenida Diagonal", "Calle Real"),
}  # fmt: skip

_TITLES = {"F": ("Ms", "Mrs", "Dr"), "M": ("Mr", "Dr"), "X": ("Mx",)}
_DOMAINS = (
    "example.com", "example.net", "example.org", "mail.example.com", "inbox.example.net",
    "post.example.org",
)  # fmt: skip
_PARTNERS = (
    ("partner-brightpath", ("bp-home", "bp-newsletter")),
    ("partner-couponcove", ("cc-deals", "cc-app")),
    ("partner-quizhub", ("qh-quiz-42", "qh-survey")),
    ("partner-savvysaver", ("ss-footer",)),
)
_CREATIVES = ("banner-728x90-a", "banner-300x250-b", "native-card-c", "email-insert-d")
_AUDIENCES = ("homeowners", "new-parents", "students", "retirees", "pet-owners", "")
_AD_TEXTS = (
    "Yes, I would like to receive offers by email from this advertiser.",
    "Tick to hear about products and services from our partner. You can unsubscribe at any time.",
    "I agree to be contacted by phone or email about my free quote.",
)
_BROWSERS = (
    ("Chrome", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
               "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"),
    ("Safari", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"),
    ("Firefox", "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"),
    ("Edge", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
             "Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0"),
)  # fmt: skip
_INTERESTS = ("solar panels", "home insurance", "broadband", "pet food", "travel", "cars")


def _ascii_slug(text: str) -> str:
    """Letters of `text` without accents, spaces or apostrophes: for e-mail local parts."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in plain.lower() if ch.isalnum())


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def _letters(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(count))


def _postcode(rng: random.Random, country: str) -> str:
    match country:
        case "GB":
            return f"{_letters(rng, 2)}{rng.randint(1, 20)} {rng.randint(1, 9)}{_letters(rng, 2)}"
        case "CA":
            letters = _letters(rng, 3)
            return (
                f"{letters[0]}{rng.randint(0, 9)}{letters[1]} "
                f"{rng.randint(0, 9)}{letters[2]}{rng.randint(0, 9)}"
            )
        case "IE":
            return f"D{rng.randint(1, 24):02d} {_letters(rng, 1)}{_digits(rng, 3)}"
        case "NL":
            return f"{rng.randint(1000, 9999)} {_letters(rng, 2)}"
        case "AU" | "NZ":
            return _digits(rng, 4)
        case _:
            return _digits(rng, 5)


_DIALLING = {"US": "1", "CA": "1", "GB": "44", "IE": "353", "AU": "61", "NZ": "64",
             "DE": "49", "FR": "33", "NL": "31", "ES": "34"}  # fmt: skip


def _phone(rng: random.Random, country: str) -> str:
    match country:
        case "US" | "CA":  # 555-0100..0199 is reserved for fiction
            return f"+1 {rng.choice(('202', '312', '415', '617'))} 555 01{_digits(rng, 2)}"
        case "GB":  # Ofcom's drama range
            return f"+44 7700 900{_digits(rng, 3)}"
        case "AU":  # ACMA's fictional mobile range
            return f"+61 491 570 {_digits(rng, 3)}"
        case _:
            return f"+{_DIALLING[country]} {_digits(rng, 3)} {_digits(rng, 3)} {_digits(rng, 3)}"


def _ip_address(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return f"2001:db8::{rng.randint(1, 0xFFFF):x}"
    prefix = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{prefix}.{rng.randint(1, 254)}"


def synthetic_referral(
    account_id: str, campaign_id: str, index: int, seed: int
) -> referral_pb2.Referral:
    """Referral number `index` of the sequence `seed`: the same arguments, the same row."""
    rng = random.Random(seed * 1_000_003 + index)
    place = rng.choice(_PLACES)
    first, gender = rng.choice(_FIRST_NAMES[place.names])
    last = rng.choice(_LAST_NAMES[place.names])
    # Spanish speakers in Miami still live on English-named streets.
    street_names = "en" if place.country == "US" else place.names
    separator = rng.choice((".", "_", ""))
    email = f"{_ascii_slug(first)}{separator}{_ascii_slug(last)}{index}@{rng.choice(_DOMAINS)}"
    partner, publishers = rng.choice(_PARTNERS)
    browser, user_agent = rng.choice(_BROWSERS)
    opted_in = OPT_IN_FROM + timedelta(seconds=rng.randrange(OPT_IN_DAYS * 86_400))
    referral = referral_pb2.Referral(
        account_id=account_id,
        campaign_id=campaign_id,
        partner_referral_id=f"demo-{seed}-{index:08d}",
        consumer=referral_pb2.Consumer(
            email=email,
            title=rng.choice(_TITLES[gender]) if rng.random() < 0.6 else "",
            first_name=first,
            last_name=last,
            gender=gender if rng.random() < 0.8 else "",
            date_of_birth=(
                (BIRTH_FROM + timedelta(days=rng.randrange(BIRTH_DAYS))).isoformat()
                if rng.random() < 0.7
                else ""
            ),
            mobile=_phone(rng, place.country) if rng.random() < 0.75 else "",
            phone=_phone(rng, place.country) if rng.random() < 0.2 else "",
            address_line1=f"{rng.randint(1, 250)} {rng.choice(_STREETS[street_names])}",
            address_line2=f"Apt {rng.randint(1, 40)}" if rng.random() < 0.15 else "",
            city=place.city,
            state=place.state,
            postcode=_postcode(rng, place.country),
            country=place.country,
            language=place.language,
        ),
        opt_in=referral_pb2.OptIn(
            partner_id=partner,
            publisher_id=rng.choice(publishers),
            creative_id=rng.choice(_CREATIVES),
            ad_text=rng.choice(_AD_TEXTS),
            audience=rng.choice(_AUDIENCES),
            ip_address=_ip_address(rng),
            user_agent=user_agent,
            browser=browser,
        ),
        extra={
            "interest": rng.choice(_INTERESTS),
            "newsletter": rng.choice(("yes", "no")),
        },
    )
    referral.opt_in.opted_in_at.FromDatetime(opted_in)
    return referral


def synthetic_referrals(
    account_id: str, campaign_id: str, n: int, seed: int, *, start: int = 0
) -> list[referral_pb2.Referral]:
    """Referrals number start … start+n-1 of the sequence `seed` (ids demo-<seed>-<index>)."""
    return [
        synthetic_referral(account_id, campaign_id, index, seed)
        for index in range(start, start + n)
    ]

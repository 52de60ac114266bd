"""Definitions the engine works on: custom-field steps, layouts and output formats."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class MatchMode(enum.Enum):
    """How a value map compares the input with each entry's match text."""

    EQUALS = "equals"
    CONTAINS = "contains"


@dataclass(frozen=True, slots=True)
class MapEntry:
    """One value-map rule: input matching `match` becomes `value`."""

    match: str
    value: str


@dataclass(frozen=True, slots=True)
class ValueMapStep:
    """Replace values by table; the first matching entry wins."""

    entries: tuple[MapEntry, ...]
    match_mode: MatchMode = MatchMode.EQUALS
    case_insensitive: bool = False
    empty_value: str | None = None  # output for empty input; None: stays empty
    default_value: str | None = None  # output when nothing matches; None: input passes


class DateKind(enum.Enum):
    """A way of writing a point in time (or a calendar date)."""

    ISO_8601 = "iso_8601"
    UNIX_SECONDS = "unix_seconds"
    UNIX_MILLISECONDS = "unix_milliseconds"
    SPREADSHEET_SERIAL = "spreadsheet_serial"  # 1900 date system (Excel, Sheets, LibreOffice)
    PATTERN = "pattern"  # strftime / strptime pattern


@dataclass(frozen=True, slots=True)
class DateStep:
    """Parse a date or time and write it in another form and time zone."""

    input: DateKind = DateKind.ISO_8601
    input_pattern: str = ""
    input_time_zone: str = ""  # zone of inputs without an offset; "" = the account's zone
    output: DateKind = DateKind.ISO_8601
    output_pattern: str = ""
    output_time_zone: str = ""  # "" = the account's zone
    fallback: str | None = None  # output when the input is not a date; None: input passes


@dataclass(frozen=True, slots=True)
class TemplateStep:
    """Join fields into text: `{first_name} {last_name}`; `{value}` is the current value."""

    template: str


class CaseMode(enum.Enum):
    """Letter case to convert to."""

    UPPER = "upper"
    LOWER = "lower"
    TITLE = "title"


@dataclass(frozen=True, slots=True)
class CaseStep:
    """Change letter case."""

    mode: CaseMode


@dataclass(frozen=True, slots=True)
class TrimStep:
    """Strip surrounding white space; optionally collapse inner runs to one space."""

    collapse_spaces: bool = False


@dataclass(frozen=True, slots=True)
class TruncateStep:
    """Keep at most `max_chars` characters (never splitting off a combining mark)."""

    max_chars: int


@dataclass(frozen=True, slots=True)
class ConstantStep:
    """Always output `value`."""

    value: str


@dataclass(frozen=True, slots=True)
class DefaultStep:
    """Output `value` when the input is empty."""

    value: str


class HashAlgorithm(enum.Enum):
    """Digest written as lower-case hex."""

    SHA256 = "sha256"
    MD5 = "md5"


@dataclass(frozen=True, slots=True)
class HashStep:
    """Hash the value; by default normalised first (trimmed, lower-cased) like an email."""

    algorithm: HashAlgorithm = HashAlgorithm.SHA256
    normalize: bool = True


class PhoneFormat(enum.Enum):
    """How a normalised phone number is written."""

    E164 = "e164"
    INTERNATIONAL = "international"
    NATIONAL = "national"


@dataclass(frozen=True, slots=True)
class PhoneStep:
    """Normalise a phone number (libphonenumber rules) given a default country."""

    default_country: str
    country_field: str = ""  # a field holding the row's country, used before the default
    format: PhoneFormat = PhoneFormat.E164
    accept_possible: bool = False  # accept numbers of a possible length not known valid
    fallback: str | None = None  # output when the input is no phone number; None: input passes


Step = (
    ValueMapStep
    | DateStep
    | TemplateStep
    | CaseStep
    | TrimStep
    | TruncateStep
    | ConstantStep
    | DefaultStep
    | HashStep
    | PhoneStep
)


@dataclass(frozen=True, slots=True)
class CustomFieldSpec:
    """A named pipeline of steps over a source field ("" = start from empty text)."""

    name: str
    source: str = ""
    steps: tuple[Step, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class Column:
    """One output column: its header and the field (standard, context or custom) it shows."""

    header: str
    field: str


class FormulaGuard(enum.Enum):
    """How CSV cells that a spreadsheet would run as formulas are neutralised."""

    STRICT = "strict"  # every cell starting with = + - @ tab or CR gets a leading '
    ALLOW_NUMBERS = "allow_numbers"  # like STRICT, but plain numbers (-1.5, +4420...) stay
    OFF = "off"


class Quoting(enum.Enum):
    """Which CSV cells are quoted."""

    MINIMAL = "minimal"  # only cells that need it (RFC 4180)
    ALL = "all"


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """RFC 4180 CSV with the usual dialect choices."""

    delimiter: str = ","
    quoting: Quoting = Quoting.MINIMAL
    header: bool = True
    line_ending: str = "\r\n"
    byte_order_mark: bool = False


@dataclass(frozen=True, slots=True)
class JsonLinesFormat:
    """One JSON object per line, keys are the column headers."""

    empty_as_null: bool = False


@dataclass(frozen=True, slots=True)
class JsonArrayFormat:
    """One JSON array of objects (for bodies and files that want a single document)."""

    empty_as_null: bool = False


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """The file or body format, optionally gzip-compressed."""

    body: CsvFormat | JsonLinesFormat | JsonArrayFormat = field(default_factory=CsvFormat)
    gzip: bool = False


@dataclass(frozen=True, slots=True)
class LayoutSpec:
    """Ordered columns plus how they are written."""

    columns: tuple[Column, ...]
    formula_guard: FormulaGuard = FormulaGuard.STRICT
    format: OutputFormat = field(default_factory=OutputFormat)

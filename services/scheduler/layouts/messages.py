"""Converts LayoutService messages to engine definitions and back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from services.common.errors import FieldProblem, InvalidArgumentError
from services.common.gen.handoff.ingest.v1 import referral_pb2
from services.common.gen.handoff.scheduler.v1 import layouts_pb2 as pb
from services.common.layouts.catalog import (
    CONTEXT_FIELDS,
    EXTRA_EXAMPLE,
    STANDARD_FIELDS,
    FieldInfo,
    FieldKind,
    FieldType,
    RowValue,
    row_from_values,
)
from services.common.layouts.model import (
    CaseMode,
    CaseStep,
    Column,
    ConstantStep,
    CsvFormat,
    CustomFieldSpec,
    DateKind,
    DateStep,
    DefaultStep,
    FormulaGuard,
    HashAlgorithm,
    HashStep,
    JsonArrayFormat,
    JsonLinesFormat,
    LayoutSpec,
    MapEntry,
    MatchMode,
    OutputFormat,
    PhoneFormat,
    PhoneStep,
    Quoting,
    Step,
    TemplateStep,
    TrimStep,
    TruncateStep,
    ValueMapStep,
)
from services.common.layouts.problems import ProblemSummary
from services.common.timestamps import timestamp_message
from services.scheduler.layouts.model import SavedCustomField, SavedLayout

K = TypeVar("K")
V = TypeVar("V")

_FIELD_TYPES = {
    FieldType.STRING: pb.FIELD_TYPE_STRING,
    FieldType.INTEGER: pb.FIELD_TYPE_INTEGER,
    FieldType.DATE: pb.FIELD_TYPE_DATE,
    FieldType.TIMESTAMP: pb.FIELD_TYPE_TIMESTAMP,
    FieldType.UUID: pb.FIELD_TYPE_UUID,
    FieldType.IP_ADDRESS: pb.FIELD_TYPE_IP_ADDRESS,
    FieldType.JSON: pb.FIELD_TYPE_JSON,
}
_FIELD_KINDS = {
    FieldKind.STANDARD: pb.FIELD_KIND_STANDARD,
    FieldKind.CONTEXT: pb.FIELD_KIND_CONTEXT,
    FieldKind.EXTRA: pb.FIELD_KIND_EXTRA,
    FieldKind.CUSTOM: pb.FIELD_KIND_CUSTOM,
}
_DATE_FORMS = {
    pb.DATE_FORM_UNSPECIFIED: DateKind.ISO_8601,
    pb.DATE_FORM_ISO_8601: DateKind.ISO_8601,
    pb.DATE_FORM_UNIX_SECONDS: DateKind.UNIX_SECONDS,
    pb.DATE_FORM_UNIX_MILLISECONDS: DateKind.UNIX_MILLISECONDS,
    pb.DATE_FORM_SPREADSHEET_SERIAL: DateKind.SPREADSHEET_SERIAL,
    pb.DATE_FORM_PATTERN: DateKind.PATTERN,
}
_MATCH_MODES = {
    pb.ValueMapStep.MATCH_MODE_UNSPECIFIED: MatchMode.EQUALS,
    pb.ValueMapStep.MATCH_MODE_EQUALS: MatchMode.EQUALS,
    pb.ValueMapStep.MATCH_MODE_CONTAINS: MatchMode.CONTAINS,
}
_CASE_MODES = {
    pb.CaseStep.MODE_UPPER: CaseMode.UPPER,
    pb.CaseStep.MODE_LOWER: CaseMode.LOWER,
    pb.CaseStep.MODE_TITLE: CaseMode.TITLE,
}
_HASHES = {
    pb.HashStep.ALGORITHM_UNSPECIFIED: HashAlgorithm.SHA256,
    pb.HashStep.ALGORITHM_SHA256: HashAlgorithm.SHA256,
    pb.HashStep.ALGORITHM_MD5: HashAlgorithm.MD5,
}
_PHONE_FORMATS = {
    pb.PhoneStep.FORMAT_UNSPECIFIED: PhoneFormat.E164,
    pb.PhoneStep.FORMAT_E164: PhoneFormat.E164,
    pb.PhoneStep.FORMAT_INTERNATIONAL: PhoneFormat.INTERNATIONAL,
    pb.PhoneStep.FORMAT_NATIONAL: PhoneFormat.NATIONAL,
}
_GUARDS = {
    pb.FORMULA_GUARD_UNSPECIFIED: FormulaGuard.STRICT,
    pb.FORMULA_GUARD_STRICT: FormulaGuard.STRICT,
    pb.FORMULA_GUARD_ALLOW_NUMBERS: FormulaGuard.ALLOW_NUMBERS,
    pb.FORMULA_GUARD_OFF: FormulaGuard.OFF,
}
_QUOTING = {
    pb.CsvFormat.QUOTING_UNSPECIFIED: Quoting.MINIMAL,
    pb.CsvFormat.QUOTING_MINIMAL: Quoting.MINIMAL,
    pb.CsvFormat.QUOTING_ALL: Quoting.ALL,
}
_LINE_ENDINGS = {
    pb.CsvFormat.LINE_ENDING_UNSPECIFIED: "\r\n",
    pb.CsvFormat.LINE_ENDING_CRLF: "\r\n",
    pb.CsvFormat.LINE_ENDING_LF: "\n",
}


def _inverse(mapping: Mapping[K, V]) -> dict[V, K]:
    out: dict[V, K] = {}
    for key, value in mapping.items():
        out.setdefault(value, key)  # the first (canonical) key wins over UNSPECIFIED aliases
    return out


_DATE_FORMS_OUT = _inverse({k: v for k, v in _DATE_FORMS.items() if k})
_MATCH_MODES_OUT = _inverse({k: v for k, v in _MATCH_MODES.items() if k})
_CASE_MODES_OUT = _inverse(_CASE_MODES)
_HASHES_OUT = _inverse({k: v for k, v in _HASHES.items() if k})
_PHONE_FORMATS_OUT = _inverse({k: v for k, v in _PHONE_FORMATS.items() if k})
_GUARDS_OUT = _inverse({k: v for k, v in _GUARDS.items() if k})
_QUOTING_OUT = _inverse({k: v for k, v in _QUOTING.items() if k})
_LINE_ENDINGS_OUT = _inverse({k: v for k, v in _LINE_ENDINGS.items() if k})


def _enum(path: str, mapping: Mapping[K, V], value: K) -> V:
    if value not in mapping:
        raise InvalidArgumentError(
            f"{path} has an unknown value {value}",
            [FieldProblem(path, "UNKNOWN_VALUE", f"unknown value {value}")],
        )
    return mapping[value]


def _optional(message: object, name: str) -> str | None:
    value = getattr(message, name)
    return value if message.HasField(name) else None  # type: ignore[attr-defined]


def step_from_message(path: str, message: pb.Step) -> Step:
    """The engine step for a Step message; InvalidArgumentError when none is set."""
    kind = message.WhichOneof("kind")
    if kind == "map":
        m = message.map
        return ValueMapStep(
            entries=tuple(MapEntry(e.match, e.value) for e in m.entries),
            match_mode=_enum(f"{path}.map.match_mode", _MATCH_MODES, m.match_mode),
            case_insensitive=m.case_insensitive,
            empty_value=_optional(m, "empty_value"),
            default_value=_optional(m, "default_value"),
        )
    if kind == "date":
        d = message.date
        return DateStep(
            input=_enum(f"{path}.date.input", _DATE_FORMS, d.input),
            input_pattern=d.input_pattern,
            input_time_zone=d.input_time_zone,
            output=_enum(f"{path}.date.output", _DATE_FORMS, d.output),
            output_pattern=d.output_pattern,
            output_time_zone=d.output_time_zone,
            fallback=_optional(d, "fallback"),
        )
    if kind == "template":
        return TemplateStep(message.template.template)
    if kind == "case_change":
        return CaseStep(_enum(f"{path}.case_change.mode", _CASE_MODES, message.case_change.mode))
    if kind == "trim":
        return TrimStep(message.trim.collapse_spaces)
    if kind == "truncate":
        return TruncateStep(message.truncate.max_chars)
    if kind == "constant":
        return ConstantStep(message.constant.value)
    if kind == "default":
        return DefaultStep(message.default.value)
    if kind == "hash":
        h = message.hash
        return HashStep(
            _enum(f"{path}.hash.algorithm", _HASHES, h.algorithm), not h.keep_input_as_is
        )
    if kind == "phone":
        p = message.phone
        return PhoneStep(
            default_country=p.default_country,
            country_field=p.country_field,
            format=_enum(f"{path}.phone.format", _PHONE_FORMATS, p.format),
            accept_possible=p.accept_possible,
            fallback=_optional(p, "fallback"),
        )
    raise InvalidArgumentError(
        f"{path} sets no step type", [FieldProblem(path, "REQUIRED", "set one step type")]
    )


def step_message(step: Step) -> pb.Step:
    """The Step message for an engine step."""
    match step:
        case ValueMapStep():
            return pb.Step(
                map=pb.ValueMapStep(
                    entries=[
                        pb.ValueMapStep.Entry(match=e.match, value=e.value) for e in step.entries
                    ],
                    match_mode=_MATCH_MODES_OUT[step.match_mode],
                    case_insensitive=step.case_insensitive,
                    empty_value=step.empty_value,
                    default_value=step.default_value,
                )
            )
        case DateStep():
            return pb.Step(
                date=pb.DateStep(
                    input=_DATE_FORMS_OUT[step.input],
                    input_pattern=step.input_pattern,
                    input_time_zone=step.input_time_zone,
                    output=_DATE_FORMS_OUT[step.output],
                    output_pattern=step.output_pattern,
                    output_time_zone=step.output_time_zone,
                    fallback=step.fallback,
                )
            )
        case TemplateStep():
            return pb.Step(template=pb.TemplateStep(template=step.template))
        case CaseStep():
            return pb.Step(case_change=pb.CaseStep(mode=_CASE_MODES_OUT[step.mode]))
        case TrimStep():
            return pb.Step(trim=pb.TrimStep(collapse_spaces=step.collapse_spaces))
        case TruncateStep():
            return pb.Step(truncate=pb.TruncateStep(max_chars=step.max_chars))
        case ConstantStep():
            return pb.Step(constant=pb.ConstantStep(value=step.value))
        case DefaultStep():
            return pb.Step(default=pb.DefaultStep(value=step.value))
        case HashStep():
            return pb.Step(
                hash=pb.HashStep(
                    algorithm=_HASHES_OUT[step.algorithm], keep_input_as_is=not step.normalize
                )
            )
        case PhoneStep():
            return pb.Step(
                phone=pb.PhoneStep(
                    default_country=step.default_country,
                    country_field=step.country_field,
                    format=_PHONE_FORMATS_OUT[step.format],
                    accept_possible=step.accept_possible,
                    fallback=step.fallback,
                )
            )


def custom_field_spec(message: pb.CustomField, prefix: str = "field") -> CustomFieldSpec:
    """The engine definition of a CustomField message."""
    steps = tuple(
        step_from_message(f"{prefix}.steps[{i}]", step) for i, step in enumerate(message.steps)
    )
    return CustomFieldSpec(message.name, message.source, steps, message.description)


def custom_field_message(saved: SavedCustomField) -> pb.CustomField:
    """The CustomField message of a saved field."""
    return pb.CustomField(
        id=str(saved.id),
        account_id=str(saved.account_id),
        name=saved.spec.name,
        description=saved.spec.description,
        source=saved.spec.source,
        steps=[step_message(s) for s in saved.spec.steps],
        version=saved.version,
        created_at=timestamp_message(saved.created_at),
        updated_at=timestamp_message(saved.updated_at),
    )


def output_format(message: pb.OutputFormat, path: str = "layout.format") -> OutputFormat:
    """The engine format of an OutputFormat message (CSV when no body is set)."""
    body = message.WhichOneof("body")
    if body == "json_lines":
        return OutputFormat(JsonLinesFormat(message.json_lines.empty_as_null), message.gzip)
    if body == "json":
        return OutputFormat(JsonArrayFormat(message.json.empty_as_null), message.gzip)
    csv = message.csv
    return OutputFormat(
        CsvFormat(
            delimiter=csv.delimiter or ",",
            quoting=_enum(f"{path}.csv.quoting", _QUOTING, csv.quoting),
            header=not csv.omit_header,
            line_ending=_enum(f"{path}.csv.line_ending", _LINE_ENDINGS, csv.line_ending),
            byte_order_mark=csv.byte_order_mark,
        ),
        message.gzip,
    )


def output_format_message(fmt: OutputFormat) -> pb.OutputFormat:
    """The OutputFormat message of an engine format."""
    body = fmt.body
    if isinstance(body, JsonLinesFormat):
        return pb.OutputFormat(
            json_lines=pb.JsonLinesFormat(empty_as_null=body.empty_as_null), gzip=fmt.gzip
        )
    if isinstance(body, JsonArrayFormat):
        return pb.OutputFormat(json=pb.JsonFormat(empty_as_null=body.empty_as_null), gzip=fmt.gzip)
    return pb.OutputFormat(
        csv=pb.CsvFormat(
            delimiter=body.delimiter,
            quoting=_QUOTING_OUT[body.quoting],
            omit_header=not body.header,
            line_ending=_LINE_ENDINGS_OUT[body.line_ending],
            byte_order_mark=body.byte_order_mark,
        ),
        gzip=fmt.gzip,
    )


def layout_spec(message: pb.Layout) -> LayoutSpec:
    """The engine definition of a Layout message."""
    return LayoutSpec(
        columns=tuple(Column(c.header, c.field) for c in message.columns),
        formula_guard=_enum("layout.formula_guard", _GUARDS, message.formula_guard),
        format=output_format(message.format),
    )


def layout_message(saved: SavedLayout) -> pb.Layout:
    """The Layout message of a saved (or the built-in) layout."""
    return pb.Layout(
        id=str(saved.id) if saved.id else "",
        account_id=str(saved.account_id),
        name=saved.name,
        columns=[pb.Column(header=c.header, field=c.field) for c in saved.spec.columns],
        formula_guard=_GUARDS_OUT[saved.spec.formula_guard],
        format=output_format_message(saved.spec.format),
        is_default=saved.is_default,
        version=saved.version,
        created_at=timestamp_message(saved.created_at),
        updated_at=timestamp_message(saved.updated_at),
    )


def field_info_messages(customs: Iterable[SavedCustomField]) -> list[pb.FieldInfo]:
    """The catalog (standard, context, extra) followed by the given custom fields."""
    catalog: list[FieldInfo] = [*STANDARD_FIELDS, *CONTEXT_FIELDS, EXTRA_EXAMPLE]
    catalog += [
        FieldInfo(
            c.spec.name, FieldType.STRING, FieldKind.CUSTOM, c.spec.description or "Custom field"
        )
        for c in customs
    ]
    return [
        pb.FieldInfo(
            name=f.name,
            type=_FIELD_TYPES[f.type],
            kind=_FIELD_KINDS[f.kind],
            description=f.description,
        )
        for f in catalog
    ]


def sample_rows(
    account_id: str, messages: Sequence[referral_pb2.Referral], received_at: datetime
) -> list[list[str]]:
    """Rows for sample Referrals; InvalidArgumentError naming every sample that has none."""
    rows: list[list[str]] = []
    problems: list[FieldProblem] = []
    for i, message in enumerate(messages):
        try:
            rows.append(sample_row(account_id, message, received_at, f"samples[{i}]"))
        except InvalidArgumentError as exc:
            problems += exc.problems
    if problems:
        raise InvalidArgumentError(f"{problems[0].field} {problems[0].message}", problems)
    return rows


def _opted_in_at(opt_in: referral_pb2.OptIn, path: str) -> datetime:
    try:
        return opt_in.opted_in_at.ToDatetime(tzinfo=UTC)
    except ValueError as exc:  # seconds or nanos outside what a datetime can hold
        problem = FieldProblem(
            f"{path}.opt_in.opted_in_at",
            "OUT_OF_RANGE",
            "must be a time from 0001-01-01 to 9999-12-31 UTC",
        )
        raise InvalidArgumentError(f"{problem.field} {problem.message}", [problem]) from exc


# Samples need not be complete referrals, but they are held to ingest's size limits (the
# longest ingest field, ad_text, is 5,000 characters) so a preview cannot be made huge.
SAMPLE_MAX_CHARS = 5_000
SAMPLE_MAX_EXTRA = 100


def _check_sample_sizes(message: referral_pb2.Referral, path: str) -> None:
    problems: list[FieldProblem] = []
    texts = [
        ("account_id", message.account_id),
        ("campaign_id", message.campaign_id),
        ("partner_referral_id", message.partner_referral_id),
        *((f"consumer.{f.name}", v) for f, v in message.consumer.ListFields()),
        *((f"opt_in.{f.name}", v) for f, v in message.opt_in.ListFields() if isinstance(v, str)),
        *((f"extra.{k[:64]}", k + v) for k, v in message.extra.items()),
    ]
    for name, value in texts:
        if len(value) > SAMPLE_MAX_CHARS:
            problems.append(
                FieldProblem(
                    f"{path}.{name}", "TOO_LONG", f"at most {SAMPLE_MAX_CHARS:,} characters"
                )
            )
    if len(message.extra) > SAMPLE_MAX_EXTRA:
        problems.append(
            FieldProblem(f"{path}.extra", "TOO_MANY", f"at most {SAMPLE_MAX_EXTRA} attributes")
        )
    if problems:
        raise InvalidArgumentError(f"{problems[0].field} {problems[0].message}", problems)


def sample_row(
    account_id: str, message: referral_pb2.Referral, received_at: datetime, path: str = "sample"
) -> list[str]:
    """A row in the engine's shape for a sample Referral (seq '' as it has none).

    InvalidArgumentError (on `path`.opt_in.opted_in_at) when its opt-in time is out of range.
    """
    consumer, opt_in = message.consumer, message.opt_in
    _check_sample_sizes(message, path)
    values: dict[str, RowValue] = {
        "account_id": account_id,
        "campaign_id": message.campaign_id,
        "partner_referral_id": message.partner_referral_id,
        "received_at": received_at,
        "extra": dict(message.extra),
    }
    for name in consumer.DESCRIPTOR.fields_by_name:
        values[name] = getattr(consumer, name)
    for name in opt_in.DESCRIPTOR.fields_by_name:
        if name != "opted_in_at":
            values[name] = getattr(opt_in, name)
    if opt_in.HasField("opted_in_at"):
        values["opted_in_at"] = _opted_in_at(opt_in, path)
    return row_from_values(values)


def problem_messages(summary: ProblemSummary) -> tuple[list[pb.RowProblem], list[pb.ProblemCount]]:
    """Per-row problems and the counts per (field, code)."""
    rows = [
        pb.RowProblem(
            row=p.row,
            seq=int(p.seq) if p.seq.isdigit() else 0,
            field=p.field,
            step=p.step,
            code=p.code,
            message=p.message,
            value=p.value,
        )
        for p in summary.samples
    ]
    counts = [
        pb.ProblemCount(field=field, code=code, count=count)
        for (field, code), count in sorted(summary.counts.items())
    ]
    return rows, counts

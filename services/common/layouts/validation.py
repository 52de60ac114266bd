"""Checks custom-field and layout definitions before they are saved.

Every problem names its place the way the API spells it, e.g.
`field.steps[2].date.output_pattern`, so a user can find the step at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence, Set
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.common.control_characters import has_control_character
from services.common.errors import FieldProblem, InvalidArgumentError
from services.common.layouts.catalog import (
    EXTRA_PREFIX,
    FIELDS_BY_NAME,
    extra_key,
    is_builtin_field,
)
from services.common.layouts.model import (
    ConstantStep,
    CsvFormat,
    CustomFieldSpec,
    DateKind,
    DateStep,
    DefaultStep,
    LayoutSpec,
    MatchMode,
    OutputFormat,
    PhoneStep,
    Step,
    TemplateStep,
    TruncateStep,
    ValueMapStep,
)
from services.common.layouts.patterns import pattern_problem
from services.common.layouts.phones import REGIONS
from services.common.layouts.templates import (
    CURRENT_VALUE,
    Placeholder,
    TemplateError,
    parse_template,
    template_fields,
)

MAX_STEPS = 50
MAX_MAP_ENTRIES = 1000
MAX_TEXT = 2000
MAX_MATCH = 500
MAX_TRUNCATE = 100_000
MAX_DESCRIPTION = 500
MAX_COLUMNS = 500
MAX_HEADER = 200
# How many copies of the incoming value a field's templates may make, multiplied along its
# steps: `{value} {value}` twice in a row is 4. Results are capped at render time anyway
# (steps.MAX_VALUE_CHARS); this refuses definitions that could only ever hit that cap.
MAX_VALUE_COPIES = 16
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # fullmatch: `$` allows a final "\n"

STEP_KEYS: Mapping[type, str] = {
    ValueMapStep: "map",
    DateStep: "date",
    TemplateStep: "template",
    PhoneStep: "phone",
    ConstantStep: "constant",
    DefaultStep: "default",
    TruncateStep: "truncate",
}


def _step_path(prefix: str, index: int, step: Step, attribute: str = "") -> str:
    path = f"{prefix}.steps[{index}]"
    key = STEP_KEYS.get(type(step))
    if key and attribute:
        return f"{path}.{key}.{attribute}"
    return path


def step_references(step: Step) -> tuple[tuple[str, str], ...]:
    """(attribute, field name) pairs a step reads besides its input."""
    if isinstance(step, TemplateStep):
        try:
            return tuple(("template", name) for name in template_fields(step.template))
        except TemplateError:
            return ()
    if isinstance(step, PhoneStep) and step.country_field:
        return (("country_field", step.country_field),)
    return ()


def field_references(spec: CustomFieldSpec) -> tuple[str, ...]:
    """Every field name a custom field reads (source, template fields, country field)."""
    names = [spec.source] if spec.source else []
    for step in spec.steps:
        names.extend(name for _, name in step_references(step))
    return tuple(dict.fromkeys(names))


def custom_dependencies(spec: CustomFieldSpec) -> tuple[str, ...]:
    """The names a custom field reads that are not built-in (other custom fields)."""
    return tuple(n for n in field_references(spec) if not is_builtin_field(n))


def _text_problem(path: str, value: str | None, limit: int = MAX_TEXT) -> Iterator[FieldProblem]:
    if value is not None and len(value) > limit:
        yield FieldProblem(path, "TOO_LONG", f"at most {limit} characters")


def _zone_problem(path: str, name: str) -> Iterator[FieldProblem]:
    if not name:
        return
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        yield FieldProblem(path, "UNKNOWN_TIME_ZONE", f"{name[:64]!r} is not an IANA time zone")


def _date_problems(path: str, step: DateStep) -> Iterator[FieldProblem]:
    for kind, pattern, attribute, for_output in (
        (step.input, step.input_pattern, "input_pattern", False),
        (step.output, step.output_pattern, "output_pattern", True),
    ):
        where = f"{path}.date.{attribute}"
        if kind is DateKind.PATTERN:
            reason = pattern_problem(pattern, for_output=for_output)
            if reason:
                yield FieldProblem(where, "BAD_PATTERN", f"pattern {pattern[:64]!r} {reason}")
        elif pattern:
            yield FieldProblem(where, "UNUSED", f"only used when the {attribute[:-8]} is PATTERN")
    yield from _zone_problems(path, step)
    yield from _text_problem(f"{path}.date.fallback", step.fallback)


def _zone_problems(path: str, step: DateStep) -> Iterator[FieldProblem]:
    yield from _zone_problem(f"{path}.date.input_time_zone", step.input_time_zone)
    yield from _zone_problem(f"{path}.date.output_time_zone", step.output_time_zone)


def _map_problems(path: str, step: ValueMapStep) -> Iterator[FieldProblem]:
    if not step.entries:
        yield FieldProblem(f"{path}.map.entries", "REQUIRED", "needs at least one entry")
    if len(step.entries) > MAX_MAP_ENTRIES:
        yield FieldProblem(f"{path}.map.entries", "TOO_MANY", f"at most {MAX_MAP_ENTRIES}")
    seen: set[str] = set()
    for i, entry in enumerate(step.entries[:MAX_MAP_ENTRIES]):
        where = f"{path}.map.entries[{i}]"
        key = entry.match.strip()
        if not key:
            yield FieldProblem(f"{where}.match", "REQUIRED", "is empty (use empty_value)")
        yield from _text_problem(f"{where}.match", entry.match, MAX_MATCH)
        yield from _text_problem(f"{where}.value", entry.value)
        folded = key.casefold() if step.case_insensitive else key
        if step.match_mode is MatchMode.EQUALS and key and folded in seen:
            yield FieldProblem(f"{where}.match", "DUPLICATE", f"{key[:64]!r} is matched twice")
        seen.add(folded)
    yield from _text_problem(f"{path}.map.empty_value", step.empty_value)
    yield from _text_problem(f"{path}.map.default_value", step.default_value)


def _reference_problem(
    path: str, name: str, custom: Set[str], own_name: str
) -> Iterator[FieldProblem]:
    if name == own_name:
        yield FieldProblem(path, "REFERENCE_CYCLE", f"{own_name} refers to itself")
    elif name.startswith(EXTRA_PREFIX) and extra_key(name) is None:
        yield FieldProblem(path, "UNKNOWN_FIELD", f"{name[:80]!r} is not a valid extra key")
    elif not is_builtin_field(name) and name not in custom:
        yield FieldProblem(path, "UNKNOWN_FIELD", f"no field named {name[:80]!r}")


def _step_problems(
    prefix: str, index: int, step: Step, custom: Set[str], own_name: str
) -> Iterator[FieldProblem]:
    path = _step_path(prefix, index, step)
    match step:
        case ValueMapStep():
            yield from _map_problems(path, step)
        case DateStep():
            yield from _date_problems(path, step)
        case TemplateStep(template=text):
            where = f"{path}.template.template"
            try:
                names = template_fields(text)
            except TemplateError as exc:
                yield FieldProblem(where, "BAD_TEMPLATE", str(exc))
                return
            if not text:
                yield FieldProblem(where, "REQUIRED", "is required")
            for name in names:
                yield from _reference_problem(where, name, custom, own_name)
        case TruncateStep(max_chars=limit) if not 1 <= limit <= MAX_TRUNCATE:
            yield FieldProblem(
                f"{path}.truncate.max_chars", "OUT_OF_RANGE", f"must be 1-{MAX_TRUNCATE}"
            )
        case ConstantStep(value=text) | DefaultStep(value=text):
            key = STEP_KEYS[type(step)]
            yield from _text_problem(f"{path}.{key}.value", text)
        case PhoneStep():
            if step.default_country.upper() not in REGIONS:
                yield FieldProblem(
                    f"{path}.phone.default_country",
                    "UNKNOWN_COUNTRY",
                    f"{step.default_country[:8]!r} is not a country code phone numbers know",
                )
            if step.country_field:
                yield from _reference_problem(
                    f"{path}.phone.country_field", step.country_field, custom, own_name
                )
            yield from _text_problem(f"{path}.phone.fallback", step.fallback)
        case _:
            return


def _value_copies(step: TemplateStep) -> int:
    try:
        parts = parse_template(step.template)
    except TemplateError:
        return 1  # reported as BAD_TEMPLATE
    return sum(1 for p in parts if isinstance(p, Placeholder) and p.name == CURRENT_VALUE)


def _copies_problems(prefix: str, steps: Sequence[Step]) -> Iterator[FieldProblem]:
    copies = 1
    for index, step in enumerate(steps):
        if isinstance(step, TemplateStep):
            copies *= max(1, _value_copies(step))
            if copies > MAX_VALUE_COPIES:
                yield FieldProblem(
                    f"{prefix}.steps[{index}].template.template",
                    "TOO_MANY_COPIES",
                    f"the templates so far copy the value {copies:,} times"
                    f" (at most {MAX_VALUE_COPIES})",
                )
                return


def _find_cycle(start: str, graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A path start -> ... -> start through the graph, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _cycle_problems(
    prefix: str, spec: CustomFieldSpec, others: Mapping[str, CustomFieldSpec]
) -> Iterator[FieldProblem]:
    graph = {name: custom_dependencies(other) for name, other in others.items()}
    graph[spec.name] = custom_dependencies(spec)
    path = _find_cycle(spec.name, graph)
    if path:
        yield FieldProblem(
            _reference_path(prefix, spec, path[1]),
            "REFERENCE_CYCLE",
            "reference cycle: " + " -> ".join(path),
        )


def _reference_path(prefix: str, spec: CustomFieldSpec, name: str) -> str:
    if spec.source == name:
        return f"{prefix}.source"
    for index, step in enumerate(spec.steps):
        for attribute, referenced in step_references(step):
            if referenced == name:
                key = STEP_KEYS[type(step)]
                return f"{prefix}.steps[{index}].{key}.{attribute}"
    return prefix


def custom_field_problems(
    spec: CustomFieldSpec, others: Mapping[str, CustomFieldSpec], prefix: str = "field"
) -> list[FieldProblem]:
    """Every problem of `spec`, given the account's other custom fields by name."""
    problems: list[FieldProblem] = []
    if not _NAME.fullmatch(spec.name):
        problems.append(
            FieldProblem(
                f"{prefix}.name",
                "INVALID_NAME",
                "must start with a letter or _ and hold only letters, digits and _ (max 64)",
            )
        )
    elif spec.name in FIELDS_BY_NAME or spec.name in (CURRENT_VALUE, "extra"):
        problems.append(
            FieldProblem(f"{prefix}.name", "RESERVED_NAME", f"{spec.name!r} is a built-in field")
        )
    problems.extend(_text_problem(f"{prefix}.description", spec.description, MAX_DESCRIPTION))
    custom = set(others) | {spec.name}
    if spec.source:
        problems.extend(_reference_problem(f"{prefix}.source", spec.source, custom, spec.name))
    if len(spec.steps) > MAX_STEPS:
        problems.append(FieldProblem(f"{prefix}.steps", "TOO_MANY", f"at most {MAX_STEPS} steps"))
    for index, step in enumerate(spec.steps[:MAX_STEPS]):
        problems.extend(_step_problems(prefix, index, step, custom, spec.name))
    problems.extend(_copies_problems(prefix, spec.steps[:MAX_STEPS]))
    if not problems:
        problems.extend(_cycle_problems(prefix, spec, others))
    return problems


def format_problems(fmt: OutputFormat, path: str) -> list[FieldProblem]:
    """Every problem of an output format; `path` names it, e.g. `layout.format`."""
    if not isinstance(fmt.body, CsvFormat):
        return []
    problems: list[FieldProblem] = []
    delimiter = fmt.body.delimiter
    if len(delimiter) != 1 or delimiter in '"\r\n' or delimiter.isalnum():
        problems.append(
            FieldProblem(
                f"{path}.csv.delimiter",
                "INVALID_FORMAT",
                "must be one character other than a letter, digit, quote or line break",
            )
        )
    if fmt.body.line_ending not in ("\r\n", "\n"):
        problems.append(FieldProblem(f"{path}.csv.line_ending", "INVALID_FORMAT", "CRLF or LF"))
    return problems


def layout_problems(
    spec: LayoutSpec, custom_names: Set[str], prefix: str = "layout"
) -> list[FieldProblem]:
    """Every problem of a layout, given the names of the account's custom fields."""
    problems: list[FieldProblem] = []
    if not spec.columns:
        problems.append(FieldProblem(f"{prefix}.columns", "REQUIRED", "needs at least one column"))
    if len(spec.columns) > MAX_COLUMNS:
        problems.append(
            FieldProblem(f"{prefix}.columns", "TOO_MANY", f"at most {MAX_COLUMNS} columns")
        )
    headers: set[str] = set()
    for i, column in enumerate(spec.columns[:MAX_COLUMNS]):
        where = f"{prefix}.columns[{i}]"
        if not column.header.strip():
            problems.append(FieldProblem(f"{where}.header", "REQUIRED", "is required"))
        elif len(column.header) > MAX_HEADER:
            problems.append(
                FieldProblem(f"{where}.header", "TOO_LONG", f"at most {MAX_HEADER} characters")
            )
        elif has_control_character(column.header):
            problems.append(
                FieldProblem(f"{where}.header", "CONTROL_CHARACTER", "no control characters")
            )
        elif column.header in headers:
            problems.append(
                FieldProblem(f"{where}.header", "DUPLICATE", f"{column.header!r} is used twice")
            )
        headers.add(column.header)
        if not column.field:
            problems.append(FieldProblem(f"{where}.field", "REQUIRED", "is required"))
        else:
            problems.extend(_reference_problem(f"{where}.field", column.field, custom_names, ""))
    problems.extend(format_problems(spec.format, f"{prefix}.format"))
    return problems


def layout_custom_fields(spec: LayoutSpec) -> tuple[str, ...]:
    """Names of the custom fields a layout shows."""
    return tuple(dict.fromkeys(c.field for c in spec.columns if not is_builtin_field(c.field)))


def require_no_problems(what: str, problems: list[FieldProblem]) -> None:
    """Raise InvalidArgumentError listing every problem (the message names the first)."""
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidArgumentError(
            f"invalid {what}: {first.field}: {first.message}{more}", problems
        )

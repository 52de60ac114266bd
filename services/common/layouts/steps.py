"""Compiles each step into a function over a whole column of values at once.

Working column-wise lets most steps run as C-level map() calls over a batch instead of
Python calls per value. A step that cannot handle a value puts None in its place; the
compiler reports it and substitutes the step's fallback or the unchanged input.

No step makes a value longer than MAX_VALUE_CHARS: a longer result is a VALUE_TOO_LONG
problem like any other. Only the steps that can lengthen a value check: templates (before
building anything, from the longest input) and case changes (by up to 3x, e.g. 'ß' -> 'SS').
Every other step returns its input, a part of it, or text bounded by its saved definition.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from services.common.layouts.dates import compile_date_step
from services.common.layouts.model import (
    CaseMode,
    CaseStep,
    ConstantStep,
    DateStep,
    DefaultStep,
    HashAlgorithm,
    HashStep,
    MatchMode,
    PhoneStep,
    Step,
    TemplateStep,
    TrimStep,
    TruncateStep,
    ValueMapStep,
)
from services.common.layouts.phones import PhoneNormaliser
from services.common.layouts.problems import StepError
from services.common.layouts.templates import CURRENT_VALUE, Placeholder, parse_template

Columns = Sequence[Sequence[str]]  # every slot's column, indexed by slot
SlotOf = Callable[[str], int]  # field name -> slot holding its rendered text
Apply = Callable[[Sequence[str], Columns], list[str | None]]
Explain = Callable[[str, Columns, int], StepError]

MAX_VALUE_CHARS = 64 * 1024

# Capitalise the first letter of each word, and after O' / D' style prefixes.
_WORD_START = re.compile(r"(?:(?<=^)|(?<=[\s\-/(.]))\w|(?<=\b\w')\w")


@dataclass(frozen=True, slots=True)
class ColumnStep:
    """A compiled step: `apply` maps a column; `explain` says why a value gave None."""

    apply: Apply
    explain: Explain | None = None
    fallback: str | None = None


def title_case(text: str) -> str:
    """'jean-luc o'NEIL' -> "Jean-Luc O'Neil" (unlike str.title, "it's" stays "It's")."""
    return _WORD_START.sub(lambda m: m.group().upper(), text.lower())


def truncate(text: str, max_chars: int) -> str:
    """At most `max_chars` characters, dropping a base letter whose mark would be cut off."""
    if len(text) <= max_chars:
        return text
    end = max_chars
    while end > 0 and unicodedata.combining(text[end]):
        end -= 1
    return text[:end]


def _value_map(step: ValueMapStep) -> Apply:
    empty, default = step.empty_value, step.default_value
    insensitive = step.case_insensitive

    def keys(values: Sequence[str]) -> Sequence[str]:
        stripped = map(str.strip, values)
        return list(map(str.casefold, stripped) if insensitive else stripped)

    if step.match_mode is MatchMode.EQUALS:
        table: dict[str, str] = {}
        for entry in step.entries:
            key = entry.match.strip()
            table.setdefault(key.casefold() if insensitive else key, entry.value)
        get = table.get

        def lookup(values: Sequence[str], columns: Columns) -> list[str | None]:
            return [
                (v if empty is None else empty)
                if not k
                else get(k, v if default is None else default)
                for v, k in zip(values, keys(values), strict=True)
            ]

        return lookup

    rules = [(e.match.casefold() if insensitive else e.match, e.value) for e in step.entries]

    def first_match(value: str, key: str) -> str:
        if not key:
            return value if empty is None else empty
        for match, result in rules:
            if match in key:
                return result
        return value if default is None else default

    def contains(values: Sequence[str], columns: Columns) -> list[str | None]:
        folded = list(map(str.casefold, values)) if insensitive else values
        return [first_match(v, k if k.strip() else "") for v, k in zip(values, folded, strict=True)]

    return contains


def _longest(column: Sequence[str]) -> int:
    return max(map(len, column), default=0)  # len() is O(1): no string is scanned


def _too_long(value: str, columns: Columns, row: int) -> StepError:
    return StepError(
        "VALUE_TOO_LONG", f"the result would be longer than {MAX_VALUE_CHARS:,} characters"
    )


def _template(step: TemplateStep, slot_of: SlotOf) -> ColumnStep:
    parts = parse_template(step.template)
    # One format argument per distinct field, in order of appearance; `uses` counts how
    # often each appears, so the longest possible result is known before building any.
    arguments: dict[str, int] = {}
    uses: list[int] = []
    pattern: list[str] = []
    literal_chars = 0
    for part in parts:
        if isinstance(part, Placeholder):
            if part.name not in arguments:
                arguments[part.name] = len(uses)
                uses.append(0)
            uses[arguments[part.name]] += 1
            pattern.append(f"{{{arguments[part.name]}}}")
        else:
            literal_chars += len(part)
            pattern.append(part.replace("{", "{{").replace("}", "}}"))
    fmt = "".join(pattern)
    slots = [None if name == CURRENT_VALUE else slot_of(name) for name in arguments]

    def joined(values: Sequence[str], columns: Columns) -> list[str | None]:
        if not slots:
            return [fmt.format()] * len(values)  # literal text only, at most MAX_TEMPLATE
        inputs = [values if s is None else columns[s] for s in slots]
        longest = literal_chars + sum(n * _longest(c) for n, c in zip(uses, inputs, strict=True))
        if longest <= MAX_VALUE_CHARS:
            return list(map(fmt.format, *inputs))
        return _capped_format(fmt, inputs, uses, literal_chars)

    return ColumnStep(joined, _too_long)


def _capped_format(
    fmt: str, inputs: Sequence[Sequence[str]], uses: Sequence[int], literal_chars: int
) -> list[str | None]:
    """Format only the rows whose result stays within MAX_VALUE_CHARS (None for the others)."""
    lengths = [literal_chars] * len(inputs[0])
    for column, count in zip(inputs, uses, strict=True):
        lengths = [n + count * len(v) for n, v in zip(lengths, column, strict=True)]
    return [
        fmt.format(*row) if n <= MAX_VALUE_CHARS else None
        for n, *row in zip(lengths, *inputs, strict=True)
    ]


def _hash(step: HashStep) -> Apply:
    new = hashlib.sha256 if step.algorithm is HashAlgorithm.SHA256 else _md5
    normalize = step.normalize

    def digests(values: Sequence[str], columns: Columns) -> list[str | None]:
        texts = map(str.lower, map(str.strip, values)) if normalize else values
        return [new(t.encode("utf-8")).hexdigest() if t else "" for t in texts]

    return digests


def _md5(data: bytes) -> hashlib._Hash:
    return hashlib.md5(data, usedforsecurity=False)


def _case(step: CaseStep) -> ColumnStep:
    convert: Callable[[str], str] = {
        CaseMode.UPPER: str.upper,
        CaseMode.LOWER: str.lower,
        CaseMode.TITLE: title_case,
    }[step.mode]

    def changed(values: Sequence[str], columns: Columns) -> list[str | None]:
        out = list(map(convert, values))
        if _longest(out) <= MAX_VALUE_CHARS:
            return cast("list[str | None]", out)
        return [v if len(v) <= MAX_VALUE_CHARS else None for v in out]

    return ColumnStep(changed, _too_long)


def _trim(step: TrimStep) -> Apply:
    if step.collapse_spaces:
        return lambda values, columns: [" ".join(v.split()) for v in values]
    return lambda values, columns: list(map(str.strip, values))


def _date(step: DateStep, account_zone: str) -> ColumnStep:
    convert = compile_date_step(step, account_zone)
    converted = compile_date_step(step, account_zone, none_on_error=True)

    def explain(value: str, columns: Columns, row: int) -> StepError:
        try:
            convert(value)
        except StepError as error:
            return error
        except Exception as exc:
            return StepError("INVALID_DATE", f"{type(exc).__name__}: {exc}")
        return StepError("INVALID_DATE", "could not be converted")

    return ColumnStep(
        lambda values, columns: list(map(converted, values)),
        explain,
        step.fallback,
    )


def _phone(step: PhoneStep, slot_of: SlotOf) -> ColumnStep:
    country = slot_of(step.country_field) if step.country_field else None
    normaliser = PhoneNormaliser(step)

    def apply(values: Sequence[str], columns: Columns) -> list[str | None]:
        return normaliser.column(values, columns[country] if country is not None else None)

    def explain(value: str, columns: Columns, row: int) -> StepError:
        return normaliser.problem(value, columns[country][row] if country is not None else None)

    return ColumnStep(apply, explain, step.fallback)


def compile_step(step: Step, slot_of: SlotOf, account_zone: str) -> ColumnStep:
    """The column function for one (already validated) step."""
    match step:
        case ValueMapStep():
            return ColumnStep(_value_map(step))
        case DateStep():
            return _date(step, account_zone)
        case TemplateStep():
            return _template(step, slot_of)
        case CaseStep():
            return _case(step)
        case TrimStep():
            return ColumnStep(_trim(step))
        case TruncateStep(max_chars=limit):
            return ColumnStep(
                lambda values, columns: [
                    v if len(v) <= limit else truncate(v, limit) for v in values
                ]
            )
        case ConstantStep(value=constant):
            return ColumnStep(lambda values, columns: [constant] * len(values))
        case DefaultStep(value=default):
            return ColumnStep(lambda values, columns: [v if v.strip() else default for v in values])
        case HashStep():
            return ColumnStep(_hash(step))
        case PhoneStep():
            return _phone(step, slot_of)

"""Body templates of API connections: a JSON document, an XML document or a list of form
fields whose *string values* carry Mustache-style placeholders naming referral fields.

    {"id": "{{email}}", "name": "{{first_name}} {{last_name}}", "age": "{{extra.age:number}}"}

`{{field}}` and `{{{field}}}` (Mustache's unescaped form, which advertisers paste from other
platforms) mean the same here: Handoff always escapes a value for the body's encoding, so no
referral value can break the document or add a field. Placeholders live only in string
values (and XML text and attribute values) — never in keys, tag names or field names — so a
template is parsed once, validated when it is saved (an unknown field or a malformed
document is named by its place) and rendered by walking the parsed shape.

A JSON string that is exactly one placeholder may ask for a typed value: `:number`,
`:boolean` or `:json` (an extra attribute's own JSON value); an empty value becomes null.
A value that is not of the type asked for is a per-referral error (the referral is
rejected, the reason recorded), not a broken body.

Field names follow the one grammar of services/common/layouts/templates.py (FIELD_NAME)
and the one catalog (standard, context, `extra.<key>` and the account's custom fields).
Layout templates (`{first_name} {last_name}`) use single braces because `{value}` there is
the value flowing through a custom field's steps; a body has no such value, and advertisers
know bodies as Mustache: docs/delivery.md says so.
"""

from __future__ import annotations

import enum
import json
import re
import xml.etree.ElementTree as ET  # the standard alias
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from xml.parsers import expat

from services.common.errors import FieldProblem
from services.common.layouts.catalog import extra_key, is_builtin_field
from services.common.layouts.templates import FIELD_NAME

MAX_TEMPLATE = 20_000
_MUSTACHE = re.compile(r"\{\{(\{?)\s*([^{}:\s]*)\s*(?::\s*([a-z]+)\s*)?(\}?)\}\}")
_TYPES = ("string", "number", "boolean", "json")
# Characters XML 1.0 cannot carry at all (not even escaped): replaced, never sent.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})


class Encoding(enum.Enum):
    """How a body is written."""

    JSON = "json"
    FORM = "form"  # application/x-www-form-urlencoded (and GET query strings)
    XML = "xml"


CONTENT_TYPES = {
    Encoding.JSON: "application/json",
    Encoding.FORM: "application/x-www-form-urlencoded",
    Encoding.XML: "application/xml; charset=utf-8",
}


class TemplateError(ValueError):
    """A template that cannot be used; `problems` name each place."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = tuple(problems)


class FieldValueError(ValueError):
    """A referral value that cannot take the type its placeholder asks for."""


@dataclass(frozen=True, slots=True)
class Slot:
    """A placeholder: the field and the type it renders as."""

    field: str
    type: str = "string"


Part = str | Slot
_Parts = tuple[Part, ...] | None


def parse_text(text: str, place: str, problems: list[FieldProblem]) -> tuple[Part, ...]:
    """Literal text and placeholders of one string value (problems named by `place`)."""
    parts: list[Part] = []
    at = 0
    for match in _MUSTACHE.finditer(text):
        if match.start() > at:
            parts.append(text[at : match.start()])
        at = match.end()
        opening, name, kind, closing = match.groups()
        if bool(opening) != bool(closing):
            problems.append(
                FieldProblem(place, "INVALID_FORMAT", f"{match.group(0)!r}: unbalanced braces")
            )
            continue
        if not FIELD_NAME.fullmatch(name):
            problems.append(
                FieldProblem(place, "INVALID_FORMAT", f"{match.group(0)!r} is not a field name")
            )
            continue
        if kind is not None and kind not in _TYPES:
            problems.append(
                FieldProblem(
                    place, "UNKNOWN_CODE", f"{match.group(0)!r}: the type is one of {_TYPES}"
                )
            )
            continue
        parts.append(Slot(name, kind or "string"))
    if at < len(text):
        parts.append(text[at:])
    rest = "".join(p for p in parts if isinstance(p, str))
    if "{{" in rest or "}}" in rest:
        problems.append(
            FieldProblem(place, "INVALID_FORMAT", "a '{{' or '}}' that is not a placeholder")
        )
    typed = [p for p in parts if isinstance(p, Slot) and p.type != "string"]
    if typed and len(parts) != 1:
        problems.append(
            FieldProblem(
                place,
                "INVALID_FORMAT",
                f"a typed placeholder ({typed[0].field}:{typed[0].type}) must be the whole value",
            )
        )
    return tuple(parts)


def _join(parts: tuple[Part, ...], values: Mapping[str, str]) -> str:
    if len(parts) == 1 and isinstance(parts[0], Slot):
        return values.get(parts[0].field, "")
    return "".join(p if isinstance(p, str) else values.get(p.field, "") for p in parts)


def _typed(slot: Slot, value: str) -> Any:
    if slot.type == "string":
        return value
    if value == "":
        return None
    if slot.type == "number":
        try:
            number = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            raise FieldValueError(f"{slot.field}: {value[:40]!r} is not a number") from None
        if (isinstance(number, float) and number != number) or number in (
            float("inf"),
            float("-inf"),
        ):
            raise FieldValueError(f"{slot.field}: {value[:40]!r} is not a finite number")
        return number
    if slot.type == "boolean":
        folded = value.strip().lower()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return False
        raise FieldValueError(f"{slot.field}: {value[:40]!r} is not a boolean")
    try:
        return json.loads(value)
    except ValueError:
        return value


def typed_value(slot: Slot, value: str) -> Any:
    """`value` as `slot`'s type asks (FieldValueError when it cannot be): the one rule for
    typed placeholders, also used by vendor field mappings."""
    return _typed(slot, value)


@dataclass(frozen=True)
class BodyTemplate:
    """A parsed, validated template: the fields it reads and how to render a body."""

    encoding: Encoding
    fields: tuple[str, ...]
    _render: Callable[[Mapping[str, str]], bytes]
    _pairs: Callable[[Mapping[str, str]], list[tuple[str, str]]] | None = None

    @property
    def content_type(self) -> str:
        """The Content-Type header of a body."""
        return CONTENT_TYPES[self.encoding]

    def render(self, values: Mapping[str, str]) -> bytes:
        """The body for one referral's field values (FieldValueError for a mistyped value)."""
        return self._render(values)

    def query(self, values: Mapping[str, str]) -> list[tuple[str, str]]:
        """The template as query parameters (GET): form fields, or a flat JSON object."""
        if self._pairs is None:
            raise TemplateError(
                [FieldProblem("body_template", "INVALID_FORMAT", "GET needs flat fields")]
            )
        return self._pairs(values)


_Render = Callable[[Mapping[str, str]], bytes]
_Pairs = Callable[[Mapping[str, str]], list[tuple[str, str]]]
_Parsed = tuple[_Render, _Pairs | None]  # how a parser renders, and the query form


# -- JSON ------------------------------------------------------------------------------


def _json_node(
    node: Any, place: str, problems: list[FieldProblem], fields: list[tuple[str, str]]
) -> Any:
    """The template tree with every string replaced by its parts (dict keys checked)."""
    if isinstance(node, str):
        parts = parse_text(node, place, problems)
        fields.extend((p.field, place) for p in parts if isinstance(p, Slot))
        return parts
    if isinstance(node, list):
        return [_json_node(v, f"{place}[{i}]", problems, fields) for i, v in enumerate(node)]
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if "{{" in key:
                problems.append(
                    FieldProblem(f"{place}.{key[:40]}", "INVALID_FORMAT", "keys are literal")
                )
            out[key] = _json_node(value, f"{place}.{key}", problems, fields)
        return out
    return node  # numbers, booleans, null: literal


def _json_value(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, tuple):
        if len(node) == 1 and isinstance(node[0], Slot):
            return _typed(node[0], values.get(node[0].field, ""))
        return _join(node, values)
    if isinstance(node, list):
        return [_json_value(v, values) for v in node]
    if isinstance(node, dict):
        return {k: _json_value(v, values) for k, v in node.items()}
    return node


def _flat_pairs(tree: Any) -> Callable[[Mapping[str, str]], list[tuple[str, str]]] | None:
    if not isinstance(tree, dict) or not all(isinstance(v, tuple) for v in tree.values()):
        return None

    def pairs(values: Mapping[str, str]) -> list[tuple[str, str]]:
        return [(k, _join(v, values)) for k, v in tree.items()]

    return pairs


def _parse_json(text: str, problems: list[FieldProblem], fields: list[tuple[str, str]]) -> _Parsed:
    try:
        document = json.loads(text)
    except ValueError as exc:
        problems.append(
            FieldProblem("body_template", "INVALID_FORMAT", f"not a JSON document: {exc}")
        )
        document = {}
    tree = _json_node(document, "body_template$", problems, fields)

    def render(values: Mapping[str, str]) -> bytes:
        return json.dumps(
            _json_value(tree, values), ensure_ascii=False, separators=(",", ":")
        ).encode()

    return render, _flat_pairs(tree)


# -- form ------------------------------------------------------------------------------


def _parse_form(text: str, problems: list[FieldProblem], fields: list[tuple[str, str]]) -> _Parsed:
    """A form template is a JSON list of [name, value] pairs (or an object of them):
    names literal, values templated; repeated names are allowed (as forms allow)."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        problems.append(
            FieldProblem(
                "body_template",
                "INVALID_FORMAT",
                f'a form template is a JSON list of ["name", "value"] pairs: {exc}',
            )
        )
        document = []
    raw = list(document.items()) if isinstance(document, dict) else document
    pairs: list[tuple[str, tuple[Part, ...]]] = []
    if not isinstance(raw, list):
        problems.append(
            FieldProblem("body_template", "INVALID_FORMAT", 'a list of ["name", "value"] pairs')
        )
        raw = []
    for i, pair in enumerate(raw):
        place = f"body_template[{i}]"
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(x, str) for x in pair)
        ):
            problems.append(FieldProblem(place, "INVALID_FORMAT", '["name", "value"] strings'))
            continue
        name, value = pair
        if not name or "{{" in name:
            problems.append(
                FieldProblem(place, "INVALID_FORMAT", "a field name is literal, not empty")
            )
        parts = parse_text(value, place, problems)
        if any(isinstance(p, Slot) and p.type != "string" for p in parts):
            problems.append(FieldProblem(place, "INVALID_FORMAT", "form values are text only"))
        fields.extend((p.field, place) for p in parts if isinstance(p, Slot))
        pairs.append((name, parts))

    def query(values: Mapping[str, str]) -> list[tuple[str, str]]:
        return [(name, _join(parts, values)) for name, parts in pairs]

    def render(values: Mapping[str, str]) -> bytes:
        return urlencode(query(values)).encode()

    return render, query


# -- XML -------------------------------------------------------------------------------


def _parse_xml_document(text: str) -> ET.Element:
    # No DTD, so no entity declarations: nothing in a template can expand or fetch
    # anything (expat refuses an undeclared entity).
    if "<!doctype" in text.lower() or "<!entity" in text.lower():
        raise ValueError("a DOCTYPE (DTD or entities) is not allowed in a template")
    return ET.fromstring(text)  # noqa: S314  # no DTD: nothing to expand or fetch


def _xml_text(value: str) -> str:
    return _XML_ILLEGAL.sub("\ufffd", value)


def _parse_xml(text: str, problems: list[FieldProblem], fields: list[tuple[str, str]]) -> _Parsed:
    try:
        root = _parse_xml_document(text)
    except (ET.ParseError, expat.ExpatError, ValueError) as exc:
        problems.append(
            FieldProblem("body_template", "INVALID_FORMAT", f"not an XML document: {exc}")
        )
        root = ET.Element("referral")
    compiled: list[tuple[ET.Element, _Parts, _Parts, dict[str, tuple[Part, ...]]]] = []

    def walk(element: ET.Element, place: str) -> None:
        if "{{" in element.tag:
            problems.append(FieldProblem(place, "INVALID_FORMAT", "tag names are literal"))
        text_parts = parse_text(element.text, place, problems) if element.text else None
        tail_parts = parse_text(element.tail, f"{place}+", problems) if element.tail else None
        attributes = {}
        for name, value in element.attrib.items():
            attributes[name] = parse_text(value, f"{place}@{name}", problems)
        for parts in (text_parts or (), tail_parts or (), *attributes.values()):
            for part in parts:
                if isinstance(part, Slot):
                    fields.append((part.field, place))
                    if part.type != "string":
                        problems.append(
                            FieldProblem(place, "INVALID_FORMAT", "XML values are text only")
                        )
        compiled.append((element, text_parts, tail_parts, attributes))
        for i, child in enumerate(element):
            walk(child, f"{place}/{child.tag}[{i}]")

    walk(root, f"body_template/{root.tag}")
    plan = {id(element): (t, tail, attrs) for element, t, tail, attrs in compiled}

    def build(element: ET.Element, values: Mapping[str, str]) -> ET.Element:
        text_parts, tail_parts, attributes = plan[id(element)]
        copy = ET.Element(
            element.tag,
            {k: _xml_text(_join(v, values)) for k, v in attributes.items()},
        )
        copy.text = _xml_text(_join(text_parts, values)) if text_parts else element.text
        copy.tail = _xml_text(_join(tail_parts, values)) if tail_parts else element.tail
        copy.extend(build(child, values) for child in element)
        return copy

    def render(values: Mapping[str, str]) -> bytes:
        document: bytes = ET.tostring(build(root, values), encoding="utf-8", xml_declaration=True)
        return document

    return render, None


_PARSERS = {Encoding.JSON: _parse_json, Encoding.FORM: _parse_form, Encoding.XML: _parse_xml}


def _field_problems(fields: Sequence[tuple[str, str]], custom: Set[str]) -> Iterator[FieldProblem]:
    for name, place in dict.fromkeys(fields):
        if name.startswith("extra.") and extra_key(name) is None:
            yield FieldProblem(place, "UNKNOWN_FIELD", f"{name!r} is not an extra key")
        elif not is_builtin_field(name) and name not in custom:
            yield FieldProblem(place, "UNKNOWN_FIELD", f"no field named {name!r}")


def parse_body_template(
    text: str, encoding: Encoding, custom_fields: Set[str] | None = None
) -> BodyTemplate:
    """Parse and validate; TemplateError naming every problem. With `custom_fields` (the
    account's custom field names), every placeholder must name a known field."""
    problems: list[FieldProblem] = []
    if len(text) > MAX_TEMPLATE:
        raise TemplateError(
            [FieldProblem("body_template", "TOO_LONG", f"at most {MAX_TEMPLATE} characters")]
        )
    fields: list[tuple[str, str]] = []
    render, pairs = _PARSERS[encoding](text, problems, fields)
    if custom_fields is not None:
        problems.extend(_field_problems(fields, custom_fields))
    if problems:
        raise TemplateError(problems)
    return BodyTemplate(encoding, tuple(dict.fromkeys(f for f, _ in fields)), render, pairs)

"""Template text: literal parts and `{field}` placeholders (`{{` and `}}` escape braces).

Parsed by hand rather than with str.format, which would allow attribute and index access.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CURRENT_VALUE = "value"  # `{value}` is the value flowing through the pipeline
MAX_TEMPLATE = 2000
# The grammar of a field name in any placeholder of the product (layout templates here,
# API body templates in services/delivery/transports/http/templates.py).
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|extra\.[A-Za-z_][A-Za-z0-9_.-]*")


class TemplateError(ValueError):
    """The template text is malformed."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A `{name}` in a template."""

    name: str


TemplatePart = str | Placeholder


def parse_template(text: str) -> tuple[TemplatePart, ...]:
    """Split a template into literal strings and placeholders; TemplateError if malformed."""
    if len(text) > MAX_TEMPLATE:
        raise TemplateError(f"at most {MAX_TEMPLATE} characters")
    parts: list[TemplatePart] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "{":
            if text.startswith("{{", i):
                literal.append("{")
                i += 2
                continue
            end = text.find("}", i + 1)
            if end < 0:
                raise TemplateError(f"unclosed {{ at position {i}")
            name = text[i + 1 : end].strip()
            if not FIELD_NAME.fullmatch(name):
                raise TemplateError(f"{{{text[i + 1 : end]}}} at position {i} is not a field name")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(Placeholder(name))
            i = end + 1
        elif ch == "}":
            if text.startswith("}}", i):
                literal.append("}")
                i += 2
                continue
            raise TemplateError(f"single }} at position {i} (write }}}} for a brace)")
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def template_fields(text: str) -> tuple[str, ...]:
    """The field names a (well-formed) template refers to, in order, without `value`."""
    return tuple(
        p.name
        for p in parse_template(text)
        if isinstance(p, Placeholder) and p.name != CURRENT_VALUE
    )

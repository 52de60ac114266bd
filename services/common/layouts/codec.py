"""Definitions to and from plain JSON values, the form they are stored in (jsonb).

The stored form is the engine's own (tagged steps, enum values), versioned with "v", so
the wire contract and the storage can evolve apart.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin, get_type_hints

from services.common.layouts.model import (
    CaseStep,
    ConstantStep,
    CsvFormat,
    CustomFieldSpec,
    DateStep,
    DefaultStep,
    HashStep,
    JsonArrayFormat,
    JsonLinesFormat,
    LayoutSpec,
    OutputFormat,
    PhoneStep,
    Step,
    TemplateStep,
    TrimStep,
    TruncateStep,
    ValueMapStep,
)

VERSION = 1
STEP_TAGS: Mapping[str, type[Any]] = {
    "map": ValueMapStep,
    "date": DateStep,
    "template": TemplateStep,
    "case": CaseStep,
    "trim": TrimStep,
    "truncate": TruncateStep,
    "constant": ConstantStep,
    "default": DefaultStep,
    "hash": HashStep,
    "phone": PhoneStep,
}
_TAG_OF = {cls: tag for tag, cls in STEP_TAGS.items()}
FORMAT_TAGS: Mapping[str, type[Any]] = {
    "csv": CsvFormat,
    "json_lines": JsonLinesFormat,
    "json": JsonArrayFormat,
}
_FORMAT_TAG_OF = {cls: tag for tag, cls in FORMAT_TAGS.items()}


class CodecError(ValueError):
    """Stored data does not describe a definition this code knows."""


def _dump(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_dump(v) for v in value]
    return value


def _load_value(kind: Any, value: Any) -> Any:
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        options = [k for k in get_args(kind) if k is not type(None)]
        return _load_value(options[0], value)
    if origin is tuple:
        item = get_args(kind)[0]
        return tuple(_load_value(item, v) for v in value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _load(kind, value)
    return value


def _load(cls: type[Any], data: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {name: _load_value(hints[name], v) for name, v in data.items() if name in known}
    return cls(**values)


def step_to_json(step: Step) -> dict[str, Any]:
    """{"type": tag, ...fields}."""
    return {"type": _TAG_OF[type(step)], **_dump(step)}


def step_from_json(data: Mapping[str, Any]) -> Step:
    """The step a stored object describes."""
    cls = STEP_TAGS.get(str(data.get("type")))
    if cls is None:
        raise CodecError(f"unknown step type {data.get('type')!r}")
    try:
        step: Step = _load(cls, {k: v for k, v in data.items() if k != "type"})
    except (TypeError, ValueError, KeyError) as exc:
        raise CodecError(f"bad {data.get('type')} step: {exc}") from exc
    return step


def custom_field_to_json(spec: CustomFieldSpec) -> dict[str, Any]:
    """Source and steps (name and description are stored as columns)."""
    return {"v": VERSION, "source": spec.source, "steps": [step_to_json(s) for s in spec.steps]}


def custom_field_from_json(name: str, description: str, data: Mapping[str, Any]) -> CustomFieldSpec:
    """The custom field a stored definition describes."""
    steps = tuple(step_from_json(s) for s in data.get("steps", ()))
    return CustomFieldSpec(name, str(data.get("source", "")), steps, description)


def format_to_json(fmt: OutputFormat) -> dict[str, Any]:
    """{"type": tag, "gzip": bool, ...body fields}."""
    return {"type": _FORMAT_TAG_OF[type(fmt.body)], "gzip": fmt.gzip, **_dump(fmt.body)}


def format_from_json(data: Mapping[str, Any]) -> OutputFormat:
    """The output format a stored object describes."""
    cls = FORMAT_TAGS.get(str(data.get("type", "csv")))
    if cls is None:
        raise CodecError(f"unknown format {data.get('type')!r}")
    body = _load(cls, {k: v for k, v in data.items() if k not in ("type", "gzip")})
    return OutputFormat(body, bool(data.get("gzip", False)))


def layout_to_json(spec: LayoutSpec) -> dict[str, Any]:
    """Columns, formula guard and format."""
    return {
        "v": VERSION,
        "columns": [_dump(c) for c in spec.columns],
        "formula_guard": spec.formula_guard.value,
        "format": format_to_json(spec.format),
    }


def layout_from_json(data: Mapping[str, Any]) -> LayoutSpec:
    """The layout a stored definition describes."""
    loaded: LayoutSpec = _load(
        LayoutSpec,
        {
            "columns": data.get("columns", ()),
            "formula_guard": data.get("formula_guard", "strict"),
        },
    )
    return dataclasses.replace(loaded, format=format_from_json(data.get("format", {})))

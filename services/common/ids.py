"""Ids in requests: UUIDs, checked with an error that names the field."""

from __future__ import annotations

import uuid
from uuid import UUID

from services.common.errors import FieldProblem, InvalidArgumentError


def parse_id(field: str, value: str, *, required: bool = True) -> UUID:
    """A UUID from a request field (a fresh one when optional and empty)."""
    if not value:
        if required:
            raise InvalidArgumentError(
                f"{field} is required", [FieldProblem(field, "REQUIRED", "is required")]
            )
        return uuid.uuid4()
    try:
        return UUID(value)
    except ValueError as exc:
        problem = FieldProblem(field, "INVALID_FORMAT", f"must be a UUID, got {value[:64]!r}")
        raise InvalidArgumentError(f"{field} must be a UUID", [problem]) from exc

"""The current call's caller and request id, in contextvars set by the interceptors."""

from __future__ import annotations

import contextvars
import logging

from services.common.auth.model import Caller

current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "handoff_caller", default=None
)
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "handoff_request_id", default=""
)


def caller() -> Caller:
    """The verified caller of the call being served (set by the access interceptor)."""
    found = current_caller.get()
    if found is None:
        raise LookupError("no caller in context: the access interceptor did not run")
    return found


class CallerLogFilter(logging.Filter):
    """Adds the caller (credential id, never the token) and request id to log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = current_caller.get()
        record.caller = found.label if found is not None else ""
        record.request_id = current_request_id.get()
        return True

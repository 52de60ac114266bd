"""Logs name the caller by credential id (never the token) and carry the request id."""

from __future__ import annotations

import logging
import uuid

from services.common.auth.context import CallerLogFilter, current_caller, current_request_id
from services.common.auth.model import Caller, CredentialKind


def test_log_records_carry_the_caller_label_and_request_id() -> None:
    credential = uuid.uuid4()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    token = current_caller.set(Caller(credential, CredentialKind.ACCOUNT, "CRM"))
    request = current_request_id.set("req-7")
    try:
        assert CallerLogFilter().filter(record)
    finally:
        current_caller.reset(token)
        current_request_id.reset(request)
    assert getattr(record, "caller") == f"account:{credential}"  # noqa: B009
    assert getattr(record, "request_id") == "req-7"  # noqa: B009
    empty = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    CallerLogFilter().filter(empty)
    assert (getattr(empty, "caller"), getattr(empty, "request_id")) == ("", "")  # noqa: B009

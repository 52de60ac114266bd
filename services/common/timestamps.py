"""Timestamps in messages: one conversion for every servicer."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2


def timestamp_message(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """The Timestamp message of an aware datetime (None stays unset)."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp

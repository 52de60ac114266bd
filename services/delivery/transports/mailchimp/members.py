"""Referral values to Mailchimp members, one definition for real time and batches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.delivery.transports.mailchimp.settings import MailchimpSettings


def member(settings: MailchimpSettings, values: Mapping[str, str], email: str) -> dict[str, Any]:
    """The member body: the address, the status a new member gets, the mapped merge
    fields (empty values left out, so they do not erase what the audience holds), the
    tags."""
    merge = {tag: values[h] for h, tag in settings.merge_columns.items() if values.get(h)}
    body: dict[str, Any] = {"email_address": email, "merge_fields": merge}
    if settings.tags:
        body["tags"] = list(settings.tags)
    return body


def email_of(settings: MailchimpSettings, values: Mapping[str, str]) -> str:
    """The referral's address, as the EMAIL column renders it (trimmed)."""
    return values.get(settings.email_column, "").strip()

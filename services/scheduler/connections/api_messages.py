"""API connections in messages (ApiConnection <-> ApiSettings) and their test call."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from services.common.egress import EgressPolicy
from services.common.gen.handoff.scheduler.v1 import connections_pb2
from services.common.layouts.catalog import row_from_values
from services.common.layouts.compiler import RenderContext
from services.common.layouts.model import CustomFieldSpec
from services.common.timestamps import timestamp_message
from services.delivery.live.loop import message_id
from services.delivery.live.policy import (
    DEFAULT_DISABLE_AFTER_S,
    DEFAULT_RETRY_SCHEDULE_S,
    FieldFilter,
)
from services.delivery.live.render import BodyValues
from services.delivery.transports.http.client import ApiClient, Exchange
from services.delivery.transports.http.responses import Outcome, ResponseRule
from services.delivery.transports.http.settings import API_SECRET_NAMES, ApiSettings
from services.delivery.transports.http.templates import Encoding
from services.scheduler.connections.model import ApiConfig, Secrets

_METHODS: dict[int, str] = {
    connections_pb2.POST: "POST", connections_pb2.PUT: "PUT", connections_pb2.GET: "GET"
}  # fmt: skip
_METHODS_OUT: dict[str, Any] = {v: k for k, v in _METHODS.items()}
_ENCODINGS = {
    connections_pb2.JSON: Encoding.JSON,
    connections_pb2.FORM: Encoding.FORM,
    connections_pb2.XML: Encoding.XML,
}
_ENCODINGS_OUT = {v: k for k, v in _ENCODINGS.items()}
_AUTH: dict[int, str] = {
    connections_pb2.NONE: "none",
    connections_pb2.BASIC: "basic",
    connections_pb2.BEARER: "bearer",
    connections_pb2.API_KEY: "api_key",
    connections_pb2.OAUTH2: "oauth2",
}
_AUTH_OUT: dict[str, Any] = {v: k for k, v in _AUTH.items()}
_OUTCOMES = {
    connections_pb2.ACCEPTED: Outcome.ACCEPTED,
    connections_pb2.REJECTED: Outcome.REJECTED,
    connections_pb2.RETRY: Outcome.RETRY,
    connections_pb2.DISABLE: Outcome.DISABLE,
}
_OUTCOMES_OUT = {v: k for k, v in _OUTCOMES.items()}
# A referral for test calls when the account has none to show (every value fictional).
SAMPLE: dict[str, Any] = {
    "seq": 0, "partner_referral_id": "sample-1", "email": "ada.lovelace@example.com",
    "title": "Dr", "first_name": "Ada", "last_name": "Lovelace", "gender": "F",
    "date_of_birth": "1985-12-10", "mobile": "+44 7700 900123", "city": "London",
    "country": "GB", "language": "en-GB", "partner_id": "partner-1",
    "opted_in_at": "2026-01-01 12:00:00+00", "received_at": "2026-01-01 12:00:01+00",
    "ip_address": "203.0.113.7", "extra": {},
}  # fmt: skip


def _unknown(value: int, known: dict[int, Any], default: Any) -> Any:
    if value == 0:
        return default
    return known.get(value, f"unknown ({value})")


def api_config_of(m: connections_pb2.ApiConnection) -> tuple[ApiConfig, Secrets]:
    """The domain settings and secrets of an ApiConnection message."""
    rules = tuple(
        ResponseRule(
            _OUTCOMES.get(r.outcome, Outcome.RETRY) if r.outcome else Outcome.ACCEPTED,
            r.status,
            r.json_path,
            r.equals if r.HasField("equals") else None,
            r.contains,
            r.name,
        )
        for r in m.response_rules
    )
    settings = ApiSettings(
        url=m.url.strip(), body_template=m.body_template, test_url=m.test_url.strip(),
        method=_unknown(m.method, _METHODS, "POST"),
        encoding=_ENCODINGS.get(m.encoding, Encoding.JSON),
        headers=dict(m.headers), timeout_s=m.timeout_s or 10.0,
        auth=_unknown(m.auth, _AUTH, "none"), username=m.username,
        api_key_name=m.api_key_name, api_key_in="query" if m.api_key_in_query else "header",
        token_url=m.token_url.strip(), client_id=m.client_id, scope=m.scope,
        audience=m.audience, client_auth="body" if m.client_secret_in_body else "basic",
        standard_webhooks=m.standard_webhooks,
        previous_secret_until=m.previous_secret_until.ToDatetime(tzinfo=UTC)
        if m.HasField("previous_secret_until") else None,
        ca_pem=m.ca_pem.strip(), response_rules=rules,
        campaign_ids=None if m.all_campaigns else tuple(m.campaign_ids),
        filters=tuple(
            FieldFilter(f.field, tuple(f.values), "contains" if f.contains else "equals")
            for f in m.filters
        ),
        rate_limit_per_s=m.rate_limit_per_s, concurrency=m.concurrency or 8,
        strict_order=m.strict_order,
        retry_schedule_s=tuple(m.retry_schedule_s) or DEFAULT_RETRY_SCHEDULE_S,
        disable_after_s=m.disable_after_s or DEFAULT_DISABLE_AFTER_S,
    )  # fmt: skip
    secrets = Secrets(
        password=m.password, token=m.token, api_key=m.api_key, client_secret=m.client_secret,
        signing_secret=m.signing_secret, previous_signing_secret=m.previous_signing_secret,
    )  # fmt: skip
    return ApiConfig(settings), secrets


def api_message(config: ApiConfig, secrets_set: frozenset[str]) -> connections_pb2.ApiConnection:
    """The ApiConnection message: settings and which secrets are set, never the secrets."""
    s = config.settings
    message = connections_pb2.ApiConnection(
        url=s.url, test_url=s.test_url, method=_METHODS_OUT.get(s.method, 0),
        encoding=_ENCODINGS_OUT[s.encoding], body_template=s.body_template,
        headers=dict(s.headers), timeout_s=s.timeout_s, auth=_AUTH_OUT.get(s.auth, 0),
        username=s.username, api_key_name=s.api_key_name,
        api_key_in_query=s.api_key_in == "query", token_url=s.token_url,
        client_id=s.client_id, scope=s.scope, audience=s.audience,
        client_secret_in_body=s.client_auth == "body", standard_webhooks=s.standard_webhooks,
        previous_secret_until=timestamp_message(s.previous_secret_until), ca_pem=s.ca_pem,
        campaign_ids=list(s.campaign_ids or ()), all_campaigns=s.campaign_ids is None,
        rate_limit_per_s=s.rate_limit_per_s, concurrency=s.concurrency,
        strict_order=s.strict_order, retry_schedule_s=list(s.retry_schedule_s),
        disable_after_s=s.disable_after_s,
        secrets_set=sorted(n for n in API_SECRET_NAMES if n in secrets_set),
    )  # fmt: skip
    for rule in s.response_rules:
        out = message.response_rules.add(
            status=rule.status, json_path=rule.json_path, contains=rule.contains,
            outcome=_OUTCOMES_OUT[rule.outcome], name=rule.name,
        )  # fmt: skip
        if rule.equals is not None:
            out.equals = rule.equals
    for f in s.filters:
        message.filters.add(field=f.field, values=list(f.values), contains=f.op == "contains")
    return message


def exchange_message(exchange: Exchange) -> connections_pb2.HttpExchange:
    """A test call's exchange as the API shows it."""
    return connections_pb2.HttpExchange(
        method=exchange.method, url=exchange.url, request_headers=exchange.request_headers,
        request_body=exchange.request_body.decode("utf-8", "replace"),
        status=exchange.status or 0,
        response_headers={k: v for k, v in exchange.response_headers.items()},
        response_body=exchange.response_head.decode("utf-8", "replace"),
        latency_ms=exchange.latency_s * 1000, outcome=exchange.verdict.outcome.value,
        rule=exchange.verdict.rule, error=exchange.error,
    )  # fmt: skip


async def test_call(
    config: ApiConfig,
    secrets: Secrets,
    egress: EgressPolicy,
    connection_id: Any,
    row: list[str] | None,
    custom_fields: Mapping[str, CustomFieldSpec],
    context: RenderContext,
) -> Exchange:
    """Send one referral (`row`, or the sample) to the test URL (or the endpoint)."""
    plain = {n: getattr(secrets, n) for n in API_SECRET_NAMES if getattr(secrets, n)}
    body = BodyValues(config.settings, custom_fields, context)
    source = row if row is not None else row_from_values(SAMPLE)
    values = body.values([source])[0]
    seq = int(source[0] or 0)
    client = ApiClient(config.settings, plain, egress)
    try:
        return await client.send(body.template, values, message_id(connection_id, seq), test=True)
    finally:
        await client.close()

"""Sailthru's shared-secret request signature.

Every request carries `api_key`, `format=json`, `json` (every other parameter as one JSON
document) and `sig`: the MD5 hex digest of the secret followed by the values of all the other
parameters, sorted and concatenated, before URL encoding (booleans count as 1 and 0; nested
objects and arrays give their values). Files uploaded beside them (a job's CSV) are not signed.
Sailthru's own clients compute it this way (sailthru-python-client `get_signature_hash`,
sailthru-node-client `SailthruUtil.getSignatureHash`); Sailthru signs its postbacks alike.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from typing import Any


def parameter_values(value: Any) -> Iterator[str]:
    """The text of every value in `value`, depth first (mappings by their values)."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from parameter_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from parameter_values(item)
    elif isinstance(value, bool):
        yield "1" if value else "0"
    elif value is None:
        yield ""
    else:
        yield str(value)


def signature_string(secret: str, params: Mapping[str, Any]) -> str:
    """What is hashed: the secret, then every value sorted (as text) and concatenated."""
    return secret + "".join(sorted(parameter_values(params)))


def signature(secret: str, params: Mapping[str, Any]) -> str:
    """`sig` for `params` (which must not hold `sig` itself): MD5 hex of the UTF-8 text."""
    text = signature_string(secret, params)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def signed_params(api_key: str, secret: str, payload: Mapping[str, Any]) -> dict[str, str]:
    """The four parameters of a request whose parameters are `payload`."""
    params = {
        "api_key": api_key,
        "format": "json",
        "json": json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
    }
    params["sig"] = signature(secret, params)
    return params


def signature_matches(secret: str, params: Mapping[str, Any]) -> bool:
    """Whether `params` carries the right `sig` for `secret` (postbacks; the fake)."""
    given = params.get("sig")
    if not isinstance(given, str):
        return False
    rest = {k: v for k, v in params.items() if k != "sig"}
    return hmac.compare_digest(given, signature(secret, rest))

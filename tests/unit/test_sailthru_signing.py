"""Sailthru's request signature, against the test vectors of Sailthru's own clients."""

from __future__ import annotations

import hashlib
import json

from services.delivery.transports.sailthru.signing import (
    parameter_values,
    signature,
    signature_matches,
    signature_string,
    signed_params,
)


def test_signature_string_sorts_values_after_the_secret() -> None:
    # sailthru-node-client tests/utils.test.ts "should generate signature string with object"
    params = {"os1": "unix", "os2": "linux", "os3": "windows"}
    assert signature_string("12534sbgsd", params) == "12534sbgsdlinuxunixwindows"
    # sailthru-python-client test/test_sailthru_client.py test_signature_string
    nested = {"unix": ["Linux", "Mac", "Solaris"], "windows": "None"}
    assert signature_string("123456", nested) == "123456LinuxMacNoneSolaris"


def test_booleans_count_as_one_and_zero_and_nesting_gives_values() -> None:
    # sailthru-node-client: "should convert boolean values to numbers"
    params = {"os": ["unix", "linux"], "vals": {"type1": True, "type2": False}}
    assert list(parameter_values(params)) == ["unix", "linux", "1", "0"]


def test_signature_is_md5_hex_of_the_utf8_string() -> None:
    # sailthru-node-client: getSignatureHash of {a: ['sailthru', 1, 2]} with '1246helloMan'
    expected = hashlib.md5(b"1246helloMan12sailthru").hexdigest()
    assert signature("1246helloMan", {"a": ["sailthru", 1, 2]}) == expected
    # The clients' md5 vectors, the second one non-ASCII (UTF-8 before hashing).
    assert signature("simple_text", {}) == "b7f6e77dceccceaedc3756be73fa5d63"
    assert signature("नमस्ते विश्व", {}) == "a76a7baf44b70ec7b2ab63a71fb0ce8c"


def test_signed_params_sign_api_key_format_and_json() -> None:
    params = signed_params("key1", "s3cret", {"id": "ann@example.com", "key": "email"})
    assert set(params) == {"api_key", "format", "json", "sig"}
    assert params["format"] == "json"
    assert json.loads(params["json"]) == {"id": "ann@example.com", "key": "email"}
    text = "s3cret" + "".join(sorted([params["api_key"], "json", params["json"]]))
    assert params["sig"] == hashlib.md5(text.encode()).hexdigest()
    assert signature_matches("s3cret", params)
    assert not signature_matches("other", params)
    assert not signature_matches("s3cret", {**params, "json": '{"id":"eve@example.com"}'})

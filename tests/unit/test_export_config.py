"""ExportHttpConfig: defaults, overrides, and errors that name the variable."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.export.config import DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT, ExportHttpConfig


def test_defaults_listen_on_loopback_8080() -> None:
    config = ExportHttpConfig.from_env({})

    assert (config.host, config.port) == (DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT)
    assert config.health_timeout_s == 2.0


def test_variables_override_the_defaults() -> None:
    config = ExportHttpConfig.from_env(
        {
            "HANDOFF_EXPORT_HTTP_HOST": "0.0.0.0",
            "HANDOFF_EXPORT_HTTP_PORT": "9090",
            "HANDOFF_EXPORT_HTTP_HEALTH_TIMEOUT_S": "0.5",
        }
    )

    assert (config.host, config.port, config.health_timeout_s) == ("0.0.0.0", 9090, 0.5)


def test_blank_values_fall_back_to_the_defaults() -> None:
    config = ExportHttpConfig.from_env(
        {"HANDOFF_EXPORT_HTTP_HOST": "  ", "HANDOFF_EXPORT_HTTP_PORT": ""}
    )

    assert (config.host, config.port) == (DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT)


def test_port_zero_is_allowed_for_tests() -> None:
    assert ExportHttpConfig.from_env({"HANDOFF_EXPORT_HTTP_PORT": "0"}).port == 0


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"HANDOFF_EXPORT_HTTP_PORT": "http"}, "HANDOFF_EXPORT_HTTP_PORT must be an integer"),
        ({"HANDOFF_EXPORT_HTTP_PORT": "-1"}, "HANDOFF_EXPORT_HTTP_PORT must be at least 0"),
        ({"HANDOFF_EXPORT_HTTP_PORT": "65536"}, "HANDOFF_EXPORT_HTTP_PORT must be at most 65535"),
        (
            {"HANDOFF_EXPORT_HTTP_HEALTH_TIMEOUT_S": "soon"},
            "HANDOFF_EXPORT_HTTP_HEALTH_TIMEOUT_S must be a number",
        ),
        (
            {"HANDOFF_EXPORT_HTTP_HEALTH_TIMEOUT_S": "0"},
            "HANDOFF_EXPORT_HTTP_HEALTH_TIMEOUT_S must be above 0",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_variable(
    variables: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ExportHttpConfig.from_env(variables)


def test_by_default_no_proxy_is_trusted_and_20_per_s_bursts_of_40_are_allowed() -> None:
    config = ExportHttpConfig.from_env({})

    assert config.trusted_proxies.networks == ()
    assert config.rate_limit is not None
    assert (config.rate_limit.rate_per_s, config.rate_limit.burst) == (20.0, 40)


def test_trusted_proxies_and_the_rate_are_read() -> None:
    config = ExportHttpConfig.from_env(
        {
            "HANDOFF_EXPORT_TRUSTED_PROXIES": " 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,",
            "HANDOFF_EXPORT_RATE_PER_S": "2.5",
            "HANDOFF_EXPORT_RATE_BURST": "5",
        }
    )

    assert [str(n) for n in config.trusted_proxies.networks] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "2001:db8::/32",
    ]
    assert config.rate_limit is not None
    assert (config.rate_limit.rate_per_s, config.rate_limit.burst) == (2.5, 5)


def test_a_rate_of_zero_turns_the_limit_off() -> None:
    assert ExportHttpConfig.from_env({"HANDOFF_EXPORT_RATE_PER_S": "0"}).rate_limit is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"HANDOFF_EXPORT_TRUSTED_PROXIES": "10.0.0.0/8,gateway"}, "'gateway' is not an IP"),
        ({"HANDOFF_EXPORT_TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES: '10.0.0.0/33'"),
        ({"HANDOFF_EXPORT_RATE_PER_S": "fast"}, "HANDOFF_EXPORT_RATE_PER_S must be a number"),
        ({"HANDOFF_EXPORT_RATE_PER_S": "-1"}, "HANDOFF_EXPORT_RATE_PER_S must not be negative"),
        ({"HANDOFF_EXPORT_RATE_PER_S": "nan"}, "HANDOFF_EXPORT_RATE_PER_S must be a finite"),
        ({"HANDOFF_EXPORT_RATE_PER_S": "inf"}, "HANDOFF_EXPORT_RATE_PER_S must be a finite"),
        ({"HANDOFF_EXPORT_RATE_BURST": "0"}, "HANDOFF_EXPORT_RATE_BURST must be at least 1"),
    ],
)
def test_bad_proxy_and_rate_settings_are_refused(variables: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExportHttpConfig.from_env(variables)

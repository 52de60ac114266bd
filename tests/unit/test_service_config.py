"""ServiceConfig reads the environment and refuses values a service cannot use."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError, ServiceConfig


def test_defaults_and_overrides_are_read_per_service() -> None:
    config = ServiceConfig.from_env(
        "ingest", 50051, {"HANDOFF_INGEST_PORT": "6000", "DATABASE_URL": "postgresql://x@h/db"}
    )

    assert (config.host, config.port, config.database_url) == (
        "127.0.0.1",
        6000,
        "postgresql://x@h/db",
    )
    assert (config.db_pool_min, config.db_pool_max) == (2, 20)


def test_pool_minimum_above_maximum_is_refused_with_both_names() -> None:
    env = {"HANDOFF_INGEST_DB_POOL_MIN": "30", "HANDOFF_INGEST_DB_POOL_MAX": "10"}

    with pytest.raises(
        ConfigError, match=r"HANDOFF_INGEST_DB_POOL_MIN.*HANDOFF_INGEST_DB_POOL_MAX"
    ):
        ServiceConfig.from_env("ingest", 50051, env)


def test_non_numeric_port_is_refused() -> None:
    with pytest.raises(ConfigError, match="HANDOFF_INGEST_PORT must be an integer"):
        ServiceConfig.from_env("ingest", 50051, {"HANDOFF_INGEST_PORT": "http"})


def test_repr_never_shows_the_database_password() -> None:
    config = ServiceConfig.from_env("ingest", 50051, {"DATABASE_URL": "postgresql://u:s3cret@h/db"})

    assert "s3cret" not in repr(config)


def test_several_workers_need_a_fixed_port_and_share_it() -> None:
    with pytest.raises(ConfigError, match="WORKERS > 1 needs a fixed HANDOFF_INGEST_PORT"):
        ServiceConfig.from_env(
            "ingest", 50051, {"HANDOFF_INGEST_WORKERS": "2", "HANDOFF_INGEST_PORT": "0"}
        )

    config = ServiceConfig.from_env("ingest", 50051, {"HANDOFF_INGEST_WORKERS": "3"})

    assert (config.workers, config.reuse_port) == (3, True)
    assert not ServiceConfig.from_env("ingest", 50051, {}).reuse_port


def test_access_settings_default_to_checked_with_reflection_and_a_30_second_cache() -> None:
    access = ServiceConfig.from_env("ingest", 50051, {}).access
    assert (access.reflection, access.checks_disabled, access.auth_cache_ttl_s) == (
        True,
        False,
        30.0,
    )
    assert not access.tls_cert_file
    off = ServiceConfig.from_env("ingest", 50051, {"HANDOFF_GRPC_REFLECTION": "0"}).access
    assert off.reflection is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HANDOFF_TLS_CERT_FILE": "/x.crt"}, "go together"),
        (
            {"HANDOFF_TLS_CERT_FILE": "/no/x.crt", "HANDOFF_TLS_KEY_FILE": "/no/x.key"},
            "not a readable file",
        ),
        ({"HANDOFF_AUTH_CACHE_TTL_S": "900"}, "at most 300"),
        ({"HANDOFF_TLS_TERMINATED_UPSTREAM": "maybe"}, "1 or 0"),
        (
            {"HANDOFF_UNSAFE_DISABLE_ACCESS_CHECKS": "1", "HANDOFF_INGEST_HOST": "0.0.0.0"},
            "loopback only",
        ),
    ],
)
def test_access_settings_a_service_cannot_use_are_refused(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ServiceConfig.from_env("ingest", 50051, env)

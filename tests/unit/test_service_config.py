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

"""Typed configuration read from environment variables (12-factor)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    """Return the variable's value, or the default when unset or empty."""
    value = env.get(name, "").strip()
    return value or default


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    """Return the variable as an integer no smaller than `minimum`."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """Return the variable as a non-negative float."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")
    return value


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """Return the variable if it is one of `choices` (case-insensitive)."""
    value = env_str(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class TelemetryConfig:
    """Where traces and metrics go and how logs look."""

    service_name: str
    traces_exporter: str  # none | console | otlp
    metrics_exporter: str  # none | console | otlp
    log_level: str
    log_format: str  # json | text

    @classmethod
    def from_env(cls, service_name: str, env: Mapping[str, str] | None = None) -> TelemetryConfig:
        """Read OTEL_* and HANDOFF_LOG_* variables."""
        env = os.environ if env is None else env
        exporters = ("none", "console", "otlp")
        return cls(
            service_name=env_str(env, "OTEL_SERVICE_NAME", f"handoff-{service_name}"),
            traces_exporter=env_choice(env, "OTEL_TRACES_EXPORTER", "none", exporters),
            metrics_exporter=env_choice(env, "OTEL_METRICS_EXPORTER", "none", exporters),
            log_level=env_choice(
                env, "HANDOFF_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ).upper(),
            log_format=env_choice(env, "HANDOFF_LOG_FORMAT", "json", ("json", "text")),
        )


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """Return whether the variable is set to 1/true/yes (0/false/no or unset: False)."""
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name} must be 1 or 0, got {value!r}")


@dataclass(frozen=True)
class AccessConfig:
    """How a service's servers establish callers: TLS, the credential cache, reflection."""

    tls_cert_file: str = ""  # PEM; with tls_key_file, every server of the process is TLS
    tls_key_file: str = ""
    tls_terminated_upstream: bool = False  # a mesh or gateway terminates TLS in front
    auth_cache_ttl_s: float = 30.0  # bound on how long a revoked credential keeps working
    reflection: bool = True
    # Benchmarks only (the check's cost is measured against it); loopback hosts only.
    checks_disabled: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AccessConfig:
        """Read HANDOFF_TLS_*, HANDOFF_AUTH_CACHE_TTL_S and HANDOFF_GRPC_REFLECTION."""
        env = os.environ if env is None else env
        cert = env_str(env, "HANDOFF_TLS_CERT_FILE", "")
        key = env_str(env, "HANDOFF_TLS_KEY_FILE", "")
        if bool(cert) != bool(key):
            raise ConfigError("HANDOFF_TLS_CERT_FILE and HANDOFF_TLS_KEY_FILE go together")
        for name, path in (("HANDOFF_TLS_CERT_FILE", cert), ("HANDOFF_TLS_KEY_FILE", key)):
            if path and not os.path.isfile(path):
                raise ConfigError(f"{name} names {path!r}, which is not a readable file")
        ttl = env_float(env, "HANDOFF_AUTH_CACHE_TTL_S", 30.0)
        if ttl > 300:
            raise ConfigError(f"HANDOFF_AUTH_CACHE_TTL_S must be at most 300, got {ttl:g}")
        reflection = env.get("HANDOFF_GRPC_REFLECTION", "").strip()
        return cls(
            tls_cert_file=cert,
            tls_key_file=key,
            tls_terminated_upstream=env_flag(env, "HANDOFF_TLS_TERMINATED_UPSTREAM"),
            auth_cache_ttl_s=ttl,
            reflection=not reflection or env_flag(env, "HANDOFF_GRPC_REFLECTION"),
            checks_disabled=env_flag(env, "HANDOFF_UNSAFE_DISABLE_ACCESS_CHECKS"),
        )


@dataclass(frozen=True)
class ServiceConfig:
    """What every gRPC service needs: where to listen, the database, telemetry."""

    name: str
    host: str
    port: int
    database_url: str = field(repr=False)  # may hold a password
    db_pool_min: int
    db_pool_max: int
    shutdown_grace_s: float
    telemetry: TelemetryConfig
    workers: int = 1  # processes serving the same port (SO_REUSEPORT) when > 1
    reuse_port: bool = False
    shutdown_drain_s: float = 0.0
    max_concurrent_rpcs: int = 1000
    access: AccessConfig = AccessConfig()

    @classmethod
    def from_env(
        cls, name: str, default_port: int, env: Mapping[str, str] | None = None
    ) -> ServiceConfig:
        """Read HANDOFF_<NAME>_* variables plus the shared ones."""
        env = os.environ if env is None else env
        prefix = f"HANDOFF_{name.upper()}_"
        pool_min = env_int(env, prefix + "DB_POOL_MIN", 2, minimum=1)
        pool_max = env_int(env, prefix + "DB_POOL_MAX", 20, minimum=1)
        if pool_min > pool_max:
            raise ConfigError(
                f"{prefix}DB_POOL_MIN ({pool_min}) must not exceed {prefix}DB_POOL_MAX ({pool_max})"
            )
        workers = env_int(env, prefix + "WORKERS", 1, minimum=1)
        access = AccessConfig.from_env(env)
        host = env_str(env, prefix + "HOST", "127.0.0.1")
        if access.checks_disabled and host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError(
                f"HANDOFF_UNSAFE_DISABLE_ACCESS_CHECKS is for benchmarks on loopback only, "
                f"not with {prefix}HOST={host}"
            )
        port = env_int(env, prefix + "PORT", default_port)
        if workers > 1 and port == 0:
            raise ConfigError(f"{prefix}WORKERS > 1 needs a fixed {prefix}PORT, not 0")
        return cls(
            name=name,
            host=host,
            port=port,
            database_url=env_str(env, "DATABASE_URL", DEFAULT_DATABASE_URL),
            db_pool_min=pool_min,
            db_pool_max=pool_max,
            shutdown_grace_s=env_float(env, "HANDOFF_SHUTDOWN_GRACE_S", 10.0),
            telemetry=TelemetryConfig.from_env(name, env),
            workers=workers,
            shutdown_drain_s=env_float(env, "HANDOFF_SHUTDOWN_DRAIN_S", 0.0),
            max_concurrent_rpcs=env_int(env, prefix + "MAX_CONCURRENT_RPCS", 1000, minimum=1),
            reuse_port=workers > 1 or env.get(prefix + "REUSE_PORT", "") == "1",
            access=access,
        )

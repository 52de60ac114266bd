"""The export service's own settings: where its HTTP API listens, whom it believes about
forwarded clients, and how fast one credential may call it."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import ConfigError, env_float, env_int, env_str
from services.export.forwarded import TrustedProxies
from services.export.rate_limit import DEFAULT_BURST, DEFAULT_RATE_PER_S, RateLimit

DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8080
MAX_PORT = 65535


@dataclass(frozen=True)
class ExportHttpConfig:
    """The HTTP listener of the export service (the gRPC side uses ServiceConfig)."""

    host: str
    port: int  # 0 picks a free port
    health_timeout_s: float  # how long /healthz waits for the database
    trusted_proxies: TrustedProxies  # whose Forwarded / X-Forwarded-* are believed
    rate_limit: RateLimit | None  # per credential id, per replica; None: no limit
    replica_url: str = ""  # a read replica for export rows ('' reads the primary)
    max_streams: int = 0  # concurrent exports and downloads (0: the pool's size - 1)
    audience_max_bytes: int = 512 * 2**20  # an audience upload, uncompressed

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExportHttpConfig:
        """Read HANDOFF_EXPORT_HTTP_HOST, _PORT, _HEALTH_TIMEOUT_S,
        HANDOFF_EXPORT_TRUSTED_PROXIES, HANDOFF_EXPORT_RATE_PER_S and _RATE_BURST,
        HANDOFF_EXPORT_REPLICA_URL, HANDOFF_EXPORT_MAX_STREAMS and
        HANDOFF_EXPORT_AUDIENCE_MAX_BYTES."""
        env = os.environ if env is None else env
        port = env_int(env, "HANDOFF_EXPORT_HTTP_PORT", DEFAULT_HTTP_PORT)
        if port > MAX_PORT:
            raise ConfigError(f"HANDOFF_EXPORT_HTTP_PORT must be at most {MAX_PORT}, got {port}")
        timeout = env_float(env, "HANDOFF_EXPORT_HTTP_HEALTH_TIMEOUT_S", 2.0)
        if timeout == 0:
            raise ConfigError("HANDOFF_EXPORT_HTTP_HEALTH_TIMEOUT_S must be above 0")
        try:
            trusted = TrustedProxies.parse(env.get("HANDOFF_EXPORT_TRUSTED_PROXIES", ""))
        except ValueError as exc:
            raise ConfigError(f"HANDOFF_EXPORT_TRUSTED_PROXIES: {exc}") from exc
        rate = env_float(env, "HANDOFF_EXPORT_RATE_PER_S", DEFAULT_RATE_PER_S)
        if not math.isfinite(rate):
            raise ConfigError(f"HANDOFF_EXPORT_RATE_PER_S must be a finite number, got {rate}")
        burst = env_int(env, "HANDOFF_EXPORT_RATE_BURST", DEFAULT_BURST, minimum=1)
        return cls(
            host=env_str(env, "HANDOFF_EXPORT_HTTP_HOST", DEFAULT_HTTP_HOST),
            port=port,
            health_timeout_s=timeout,
            trusted_proxies=trusted,
            # 0 turns the limit off (e.g. where the gateway limits already).
            rate_limit=RateLimit(rate_per_s=rate, burst=burst) if rate > 0 else None,
            replica_url=env_str(env, "HANDOFF_EXPORT_REPLICA_URL", ""),
            max_streams=env_int(env, "HANDOFF_EXPORT_MAX_STREAMS", 0, minimum=0),
            audience_max_bytes=env_int(
                env, "HANDOFF_EXPORT_AUDIENCE_MAX_BYTES", 512 * 2**20, minimum=1
            ),
        )

"""The export service's own settings: where its HTTP API listens."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import ConfigError, env_float, env_int, env_str

DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8080
MAX_PORT = 65535


@dataclass(frozen=True)
class ExportHttpConfig:
    """The HTTP listener of the export service (the gRPC side uses ServiceConfig)."""

    host: str
    port: int  # 0 picks a free port
    health_timeout_s: float  # how long /healthz waits for the database
    replica_url: str = ""  # a read replica for export rows ('' reads the primary)
    max_streams: int = 0  # concurrent exports and downloads (0: the pool's size - 1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExportHttpConfig:
        """Read HANDOFF_EXPORT_HTTP_HOST, _PORT, _HEALTH_TIMEOUT_S,
        HANDOFF_EXPORT_REPLICA_URL and HANDOFF_EXPORT_MAX_STREAMS."""
        env = os.environ if env is None else env
        port = env_int(env, "HANDOFF_EXPORT_HTTP_PORT", DEFAULT_HTTP_PORT)
        if port > MAX_PORT:
            raise ConfigError(f"HANDOFF_EXPORT_HTTP_PORT must be at most {MAX_PORT}, got {port}")
        timeout = env_float(env, "HANDOFF_EXPORT_HTTP_HEALTH_TIMEOUT_S", 2.0)
        if timeout == 0:
            raise ConfigError("HANDOFF_EXPORT_HTTP_HEALTH_TIMEOUT_S must be above 0")
        return cls(
            host=env_str(env, "HANDOFF_EXPORT_HTTP_HOST", DEFAULT_HTTP_HOST),
            port=port,
            health_timeout_s=timeout,
            replica_url=env_str(env, "HANDOFF_EXPORT_REPLICA_URL", ""),
            max_streams=env_int(env, "HANDOFF_EXPORT_MAX_STREAMS", 0, minimum=0),
        )

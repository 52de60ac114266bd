"""Which services `make run` starts, where each listens, and the summary it prints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common.config import ConfigError, ServiceConfig
from services.delivery.__main__ import DEFAULT_PORT as DELIVERY_PORT
from services.export.__main__ import DEFAULT_PORT as EXPORT_PORT
from services.export.config import ExportHttpConfig
from services.ingest.__main__ import DEFAULT_PORT as INGEST_PORT
from services.launcher.ports import Listener
from services.launcher.probes import grpc_target, http_url
from services.scheduler.__main__ import DEFAULT_PORT as SCHEDULER_PORT

DEFAULT_PORTS = (
    ("ingest", INGEST_PORT),
    ("scheduler", SCHEDULER_PORT),
    ("delivery", DELIVERY_PORT),
    ("export", EXPORT_PORT),
)


@dataclass(frozen=True)
class ServicePlan:
    """One service to start: its module and where it will listen."""

    name: str
    host: str
    port: int
    http_host: str = ""
    http_port: int = 0

    @property
    def module(self) -> str:
        """The module `python -m` runs."""
        return f"services.{self.name}"

    @property
    def grpc_target(self) -> str:
        """Where a local client reaches its gRPC server."""
        return grpc_target(self.host, self.port)

    @property
    def http_url(self) -> str:
        """Base URL of its HTTP server, or '' when it has none."""
        return http_url(self.http_host, self.http_port) if self.http_port else ""

    def listeners(self) -> list[Listener]:
        """Every address it will listen on, with the variable that moves each."""
        prefix = f"HANDOFF_{self.name.upper()}_"
        found = [Listener(self.name, "gRPC", self.host, self.port, prefix + "PORT")]
        if self.http_port:
            found.append(
                Listener(self.name, "HTTP", self.http_host, self.http_port, prefix + "HTTP_PORT")
            )
        return found


def plan_services(env: Mapping[str, str]) -> list[ServicePlan]:
    """Read the same variables the services read, so the launcher knows where they listen."""
    plans = []
    for name, default_port in DEFAULT_PORTS:
        config = ServiceConfig.from_env(name, default_port, env)
        if config.port == 0:
            raise ConfigError(f"HANDOFF_{name.upper()}_PORT must be a fixed port here, not 0")
        plans.append(ServicePlan(name=name, host=config.host, port=config.port))
    http = ExportHttpConfig.from_env(env)
    if http.port == 0:
        raise ConfigError("HANDOFF_EXPORT_HTTP_PORT must be a fixed port here, not 0")
    export = plans[-1]
    plans[-1] = ServicePlan(
        name=export.name,
        host=export.host,
        port=export.port,
        http_host=http.host,
        http_port=http.port,
    )
    ports = [p.port for p in plans] + [http.port]
    if len(set(ports)) != len(ports):
        raise ConfigError(f"two services would listen on the same port: {ports}")
    return plans


def summary(
    plans: Sequence[ServicePlan], database: str, pids: Mapping[str, int] | None = None
) -> str:
    """The table printed once every service is healthy (with each one's pid when known)."""
    lines = ["Handoff is running:"]
    for plan in plans:
        line = f"  {plan.name:<10} gRPC {plan.grpc_target:<22}"
        line += f" HTTP {plan.http_url:<24}" if plan.http_url else " " * 30
        if pids and plan.name in pids:
            line += f" pid {pids[plan.name]}"
        lines.append(line.rstrip())
    lines.append(f"  {'database':<10} {database}")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)

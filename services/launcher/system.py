"""Starts the four services, waits until all are healthy, and stops them on a signal."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from services.common.service import parse_announcement
from services.launcher.children import ChildProcess, stop_children
from services.launcher.plan import ServicePlan, summary
from services.launcher.probes import (
    StartupError,
    wait_until_announced,
    wait_until_http_ok,
    wait_until_serving,
)

# Beyond the services' own grace: time to close pools and exit after the last call.
STOP_MARGIN_S = 5.0
# Ctrl-C, `kill`, and a closed terminal all stop the system cleanly.
_REPEAT_WINDOW_S = 0.5
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class SystemOptions:
    """How to run the services."""

    env: Mapping[str, str]  # what the children get, DATABASE_URL included
    database_shown: str  # the DSN without its password, for the summary
    start_timeout_s: float
    grace_s: float  # the services' own HANDOFF_SHUTDOWN_GRACE_S


class _Signals:
    """SIGINT/SIGTERM/SIGHUP ask to stop; a second one kills the services without waiting."""

    def __init__(self, children: Sequence[ChildProcess]) -> None:
        self.stop_requested = asyncio.Event()
        self.count = 0
        self._first_at = 0.0
        self._children = children

    def __call__(self, sig: signal.Signals) -> None:
        now = time.monotonic()
        # One Ctrl-C can arrive twice (e.g. `timeout` forwards it to its process group):
        # a repeat within half a second is the same request, not "kill now".
        if self.count == 1 and now - self._first_at < _REPEAT_WINDOW_S:
            return
        self.count += 1
        self.stop_requested.set()
        if self.count == 1:
            self._first_at = now
            print(
                f"run: {sig.name}: stopping the services (once more to kill them)",
                file=sys.stderr,
                flush=True,
            )
        elif self.count == 2:
            print(f"run: {sig.name} again: killing the services", file=sys.stderr, flush=True)
            for child in self._children:
                child.send_signal(signal.SIGKILL)


def exit_code_for(returncode: int) -> int:
    """The launcher's exit code after a service stopped on its own: that service's code.

    128 + N when signal N killed it, as a shell reports it.
    """
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    """How a service that stopped on its own stopped, in words."""
    if returncode == 0:
        return "stopped on its own with exit code 0 (was it sent SIGTERM?)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def _is_announcement(line: str) -> bool:
    """A service's "listening on" report: read by the launcher, not shown (the log says it)."""
    return parse_announcement(line) is not None


async def _first_completed(*awaitables: Awaitable[object], all_needed: bool = False) -> None:
    """Wait for the first to finish (or, with `all_needed`, all of them or the first error).

    The others are cancelled; an error of a finished one is raised.
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    when = asyncio.FIRST_EXCEPTION if all_needed else asyncio.FIRST_COMPLETED
    try:
        done, _ = await asyncio.wait(tasks, return_when=when)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


async def _wait_healthy(
    plans: Sequence[ServicePlan], children: Sequence[ChildProcess], timeout_s: float
) -> None:
    """Every gRPC server answers SERVING and every HTTP /healthz 200, or StartupError."""

    async def own_grpc(plan: ServicePlan, child: ChildProcess) -> None:
        await wait_until_announced(child, "gRPC", plan.port, timeout_s)
        await wait_until_serving(child, plan.grpc_target, timeout_s)

    async def own_http(plan: ServicePlan, child: ChildProcess) -> None:
        await wait_until_announced(child, "HTTP", plan.http_port, timeout_s)
        await wait_until_http_ok(child, f"{plan.http_url}/healthz", timeout_s)

    checks: list[Awaitable[None]] = []
    for plan, child in zip(plans, children, strict=True):
        checks.append(own_grpc(plan, child))
        if plan.http_url:
            checks.append(own_http(plan, child))
    await _first_completed(*checks, all_needed=True)


async def _first_exit(children: Sequence[ChildProcess]) -> ChildProcess:
    """The first child to exit, whatever its code."""
    waits = {asyncio.ensure_future(child.wait()): child for child in children}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    return waits[done.pop()]


async def _supervise(
    plans: Sequence[ServicePlan],
    children: Sequence[ChildProcess],
    options: SystemOptions,
    signals: _Signals,
    after_start: Callable[[], Awaitable[None]] | None,
    out: TextIO,
) -> int:
    """Wait for health, announce, run `after_start`, then wait for a signal or a crash."""
    stop = signals.stop_requested
    await _first_completed(_wait_healthy(plans, children, options.start_timeout_s), stop.wait())
    if stop.is_set():
        return 0
    pids = {child.name: child.pid for child in children}
    print(summary(plans, options.database_shown, pids), file=out, flush=True)
    crashed = asyncio.ensure_future(_first_exit(children))
    try:
        if after_start is not None:
            await _first_completed(after_start(), stop.wait(), asyncio.shield(crashed))
        await _first_completed(stop.wait(), asyncio.shield(crashed))
    finally:
        crashed.cancel()
    if stop.is_set():
        return 0
    child = crashed.result()
    returncode = child.returncode if child.returncode is not None else 1
    message = f"run: {child.name} {describe_exit(returncode)}; stopping the others"
    if returncode != 0:
        message += f". The end of its stderr:\n{child.stderr_tail()}"
    print(message, file=sys.stderr, flush=True)
    return exit_code_for(returncode)


async def run_system(
    plans: Sequence[ServicePlan],
    options: SystemOptions,
    *,
    after_start: Callable[[], Awaitable[None]] | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Run every planned service until a signal or a crash; return the exit code."""
    loop = asyncio.get_running_loop()
    children: list[ChildProcess] = []
    signals = _Signals(children)
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, signals, sig)
    try:
        for plan in plans:
            children.append(
                await ChildProcess.start_module(
                    plan.name, plan.module, options.env, hide=_is_announcement
                )
            )
        exit_code = await _supervise(plans, children, options, signals, after_start, out)
    except StartupError as exc:
        print(f"run: {exc}", file=sys.stderr, flush=True)
        exit_code = 1
    finally:
        codes = await stop_children(children, options.grace_s + STOP_MARGIN_S)
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    # -SIGTERM: a service still starting up when our SIGTERM came; no crash.
    failed = [
        f"{name} ({code})" for name, code in codes.items() if code not in (0, -signal.SIGTERM)
    ]
    if failed:
        print(
            f"run: services that exited with an error: {', '.join(failed)}",
            file=sys.stderr,
            flush=True,
        )
        return exit_code or 1
    print("run: all services stopped", file=out, flush=True)
    return exit_code

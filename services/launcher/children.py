"""The services as child processes: started, their output relayed, stopped within a bound."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from services.common.workers import die_with_parent

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TAIL_LINES = 25


class ChildProcess:
    """One running service: its output goes to `echo` prefixed by its name."""

    def __init__(
        self,
        name: str,
        process: asyncio.subprocess.Process,
        echo: TextIO | None,
        tail_lines: int = TAIL_LINES,
        hide: Callable[[str], bool] | None = None,
    ) -> None:
        self.name = name
        self.process = process
        self._echo = echo
        self._hide = hide
        self._stderr_tail: deque[str] = deque(maxlen=tail_lines)
        self.stdout_lines: list[str] = []
        assert process.stdout is not None  # both are pipes: see start()
        assert process.stderr is not None
        self._exited = asyncio.ensure_future(
            self._watch(process.stdout, process.stderr),
        )

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        echo: TextIO | None = sys.stderr,
        tail_lines: int = TAIL_LINES,
        hide: Callable[[str], bool] | None = None,
    ) -> ChildProcess:
        """Start `argv` in its own process group, so a terminal's Ctrl-C reaches only us.

        Its output is echoed to `echo` (None: not at all), except stdout lines for which
        `hide` is true (kept all the same); the last `tail_lines` lines of its stderr are
        kept for error messages.
        """
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=PROJECT_ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            process_group=0,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        return cls(name, process, echo, tail_lines, hide)

    @classmethod
    async def start_module(
        cls,
        name: str,
        module: str,
        env: Mapping[str, str],
        *,
        echo: TextIO | None = sys.stderr,
        hide: Callable[[str], bool] | None = None,
    ) -> ChildProcess:
        """Start `python -m module` with this interpreter."""
        return await cls.start(name, [sys.executable, "-m", module], env, echo=echo, hide=hide)

    async def _watch(self, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader) -> int:
        """Relay both streams to their end, then reap the process."""
        await asyncio.gather(
            self._relay(stdout, self.stdout_lines.append, self._hide),
            self._relay(stderr, self._stderr_tail.append, None),
        )
        return await self.process.wait()

    async def _relay(
        self,
        stream: asyncio.StreamReader,
        keep: Callable[[str], object],
        hide: Callable[[str], bool] | None,
    ) -> None:
        while line := await stream.readline():
            text = line.decode("utf-8", errors="replace").rstrip("\n")
            keep(text)
            if self._echo is not None and not (hide and hide(text)):
                try:
                    print(f"{self.name:<9}| {text}", file=self._echo, flush=True)
                except OSError:  # the terminal went away; keep draining the pipe
                    self._echo = None

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """None while running; the exit code, or -N when killed by signal N."""
        return self.process.returncode

    def stderr_tail(self) -> str:
        """The last lines the child wrote to stderr."""
        return "\n".join(self._stderr_tail)

    async def wait(self) -> int:
        """Wait for the exit and for its output to be relayed; return the exit code."""
        # Shielded: a waiter that gives up must not stop the relaying.
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: signal.Signals) -> None:
        """Send `sig` unless the child already exited."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)


async def stop_children(children: Sequence[ChildProcess], grace_s: float) -> dict[str, int]:
    """SIGTERM every child, wait up to `grace_s`, SIGKILL the rest; return their exit codes."""
    for child in children:
        child.send_signal(signal.SIGTERM)
    # A list, not a dict by name: two children may share a name (tests start two launchers).
    waits = [(child.name, asyncio.create_task(child.wait())) for child in children]
    if not waits:
        return {}
    _, pending = await asyncio.wait([task for _, task in waits], timeout=grace_s)
    if pending:
        for child in children:
            if child.returncode is None:
                print(
                    f"run: {child.name} did not stop within {grace_s:g} s; killing it",
                    file=sys.stderr,
                    flush=True,
                )
                child.send_signal(signal.SIGKILL)
        await asyncio.wait(pending)
    return {name: task.result() for name, task in waits}

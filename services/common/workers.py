"""Extra worker processes that serve the same port as their parent (SO_REUSEPORT)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """Run in a child before exec (preexec_fn): SIGTERM it if its parent dies, even by -9."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_workers(name: str, count: int) -> list[subprocess.Popen[bytes]]:
    """Start `count` more processes of service `name`, each a single worker on the port."""
    prefix = f"HANDOFF_{name.upper()}_"
    env = {**os.environ, prefix + "WORKERS": "1", prefix + "REUSE_PORT": "1"}
    return [
        subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], env=env, preexec_fn=die_with_parent
        )
        for _ in range(count)
    ]


def stop_workers(workers: list[subprocess.Popen[bytes]], timeout_s: float) -> bool:
    """SIGTERM the workers, kill any still running after `timeout_s`; True if one failed."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    failed = False
    for worker in workers:
        try:
            code = worker.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d did not stop in time; killing it", worker.pid)
            worker.kill()
            code = worker.wait()
        if code not in (0, -signal.SIGTERM, -signal.SIGINT):
            log.error("worker %d exited with %d", worker.pid, code)
            failed = True
    return failed

"""Stopping the launcher's children waits for every one of them, whatever their names."""

from __future__ import annotations

import sys

from services.launcher.children import ChildProcess, stop_children

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


async def test_stop_children_waits_for_children_that_share_a_name() -> None:
    children = [await ChildProcess.start("run", SLEEPER, {}, echo=None) for _ in range(2)]

    await stop_children(children, grace_s=10)

    assert [child.returncode for child in children] == [-15, -15]  # both stopped by SIGTERM


async def test_stop_children_of_none_is_nothing() -> None:
    assert await stop_children([], grace_s=1) == {}

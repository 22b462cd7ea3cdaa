"""Shared fixtures and the Hypothesis profiles: "ci" (default) and "thorough" (10x examples).

Select with HYPOTHESIS_PROFILE=thorough. Tests that scale a round count by the
profile read ``ROUNDS_FACTOR``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
ROUNDS_FACTOR = 10 if PROFILE == "thorough" else 1


WAIT = 5.0


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll a condition another thread makes true (a condition wait, not an ordering guess)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


def start(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``target`` in a thread; the list receives its result or its exception."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(target())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store_path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "store")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("2m")`` mounts a small tmpfs (mode 0700) for a full-disk test and returns its path;
    every one is unmounted at teardown. Skips, with the reason, where mounting is refused."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"tmpfs-{len(mounted)}"
        point.mkdir()
        if not shutil.which("mount"):
            pytest.skip("no mount command to create a small tmpfs")
        command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(point)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounted:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def resize_tmpfs(point: Path, size: str) -> None:
    """Space returns (or goes): the tmpfs at ``point`` takes ``size``."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(point)], check=True)

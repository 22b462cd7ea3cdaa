"""The simulated world of the scenarios: a clock moved by hand and a slow, counting source."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .workloads import sample_value

__all__ = ["FakeClock", "Source"]


class FakeClock:
    """A wall clock moved by the scenario, one tick at a time."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Source:
    """A slow source of truth that counts its calls per key and in total."""

    def __init__(self, delay: float, present: set[str] | None = None) -> None:
        self.delay = delay
        self.present = present
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def load(self, key: str) -> Any:
        with self._lock:
            self.calls[key] += 1
        time.sleep(self.delay)
        if self.present is not None and key not in self.present:
            return None
        return sample_value(len(key))

    def loader(self, key: str) -> Callable[[], Any]:
        return lambda: self.load(key)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

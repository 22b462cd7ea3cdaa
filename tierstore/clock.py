"""Time: the injected wall clock governs expiry, ``time.monotonic`` governs waiting.

TTLs are validated here and jitter is drawn here, so synchronized writes do not
expire together: a TTL with jitter ``j`` is drawn uniformly from
``[ttl, ttl * (1 + j)]`` and is never shorter than asked.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from types import EllipsisType

from .errors import shown

__all__ = [
    "Clock",
    "DEFAULT",
    "TTL",
    "TTLTypeError",
    "monotonic",
    "check_ttl",
    "check_seconds",
    "check_fraction",
    "wait_bound",
    "Jitter",
]

Clock = Callable[[], float]
monotonic = time.monotonic


DEFAULT = ...
# A ``ttl`` argument: seconds, ``None`` for no expiry, or ``...`` (the default) for the store's ``default_ttl``.
TTL = float | None | EllipsisType


class TTLTypeError(TypeError, ValueError):
    """A TTL that is not a number (a bool, a str...): refused as every other bad TTL is.

    A ``TypeError`` by Python's convention for a wrong type, and a ``ValueError`` as
    a TTL of 0, below 0, NaN or infinite is: a caller catching either sees it.
    """


def _as_float(value: int | float, name: str) -> float:
    """``float(value)``; an int too large for a float is a ``ValueError`` naming the argument."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite number, got an int too large for a float") from None


def check_ttl(ttl: object, name: str = "ttl") -> float | None:
    """Validate a TTL: ``None`` (no expiry) or a finite number > 0."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TTLTypeError(f"{name} must be a number of seconds or None, not {type(ttl).__name__}")
    seconds = _as_float(ttl, name)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {shown(ttl)}")
    return seconds


def check_seconds(value: object, name: str, *, allow_zero: bool = True, optional: bool = False) -> float | None:
    """Validate a non-negative finite duration (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = _as_float(value, name)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {shown(value)}")
    return seconds


def check_fraction(value: object, name: str, *, upper: float = 1.0) -> float:
    """Validate a fraction in ``[0, upper]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    fraction = _as_float(value, name)
    if not math.isfinite(fraction) or not 0.0 <= fraction <= upper:
        raise ValueError(f"{name} must be between 0 and {upper}, got {shown(value)}")
    return fraction


def wait_bound(seconds: float | None) -> float | None:
    """A timeout the threading primitives take: at most ``threading.TIMEOUT_MAX`` (about 292 years).

    Durations are only checked to be finite, and a wait on a longer one (a timer set
    ``1e300`` seconds ahead, a ``lock_timeout`` meant as "never") raises ``OverflowError``
    from the lock underneath; waiting that long is waiting forever either way.
    """
    return None if seconds is None else min(seconds, threading.TIMEOUT_MAX)


class Jitter:
    """Draws TTLs with randomized slack, never shorter than asked."""

    def __init__(self, fraction: float, rng: random.Random | None = None) -> None:
        self.fraction = fraction
        self._uniform = (rng or random.Random()).uniform

    def draw(self, ttl: float | None) -> float | None:
        if ttl is None or not self.fraction:
            return ttl
        return ttl * (1.0 + self._uniform(0.0, self.fraction))

"""The calls a store in shared mode does not offer yet: each raises ``NotImplementedError`` naming itself.

A call that ran process-locally in shared mode would break coherence (a count,
an index, a listing or a lease other processes never see), so until it is made
shared it refuses to run. The store binds these in place of its own calls when
``shared=`` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["UNSUPPORTED", "refusal"]

# attribute of the store -> how the message names the call
UNSUPPORTED: dict[str, str] = {
    "get_or_load": "get_or_load (cross-process single flight)",
    "cached": "cached (built on get_or_load)",
    "refresh_every": "refresh_every",
    "keep_fresh": "keep_fresh",
    "guard_keys": "guard_keys (the existence filter)",
    "rebuild_guard": "rebuild_guard (the existence filter)",
    "incr": "incr (counters)",
    "decr": "decr (counters)",
    "counter": "counter (counters)",
    "index": "index (sorted indexes)",
}


def refusal(call: str) -> Callable[..., NoReturn]:
    """A stand-in for ``call`` that raises ``NotImplementedError`` whatever it is given."""

    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(f"{call} is not yet supported with shared= (the shared tier is not wired for it)")

    refuse.__name__ = call.partition(" ")[0]
    return refuse

"""Counters in shared mode: Redis integers, one script call per ``incr``/``decr``, one ``GET`` per read.

A counter is the Redis string ``<prefix>c:<tagged key>`` holding the count in
decimal; it lives only in Redis (no local copy), so every process sees every
update. The rules are the local ``counters.Counters``' ones: a signed 64-bit
count (an update that would leave ``[-2**63, 2**63 - 1]`` raises
``OverflowError`` and changes nothing), a counter never touched reads 0, a
delta that is not an int is a ``TypeError``, a stored value that is not a count
a ``CorruptRecord``.

``INCRBY`` takes a signed 64-bit increment and refuses an overflow, and Lua
numbers are doubles, so the script applies the delta as parts that each fit in
64 bits (a delta past that range splits in two or three, all of one sign, so
no part overshoots when the sum does not), undoes the parts it applied when
one refuses, and returns the count as Redis's decimal string (exact). A delta
no count can absorb (``|delta| >= 2**64``) is refused after one ``GET`` (for
the message). Each call is written as steps (``incr_steps``, ...: see ``steps``)
that the blocking call runs in its thread. Thread-safety: Redis orders the
updates; the object holds no state.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from ..codec import encode_key
from ..counters import COUNTER_MAX, COUNTER_MIN
from ..errors import CorruptRecord, shown
from .client import SharedClient
from .scripts import Scripts
from .steps import Call, Steps, run

__all__ = ["SharedCounters", "INCREMENT"]

INCREMENT = """
local applied = {}
for i = 1, #ARGV do
  local r = redis.pcall('INCRBY', KEYS[1], ARGV[i])
  if type(r) == 'table' and r.err then
    for j = #applied, 1, -1 do redis.call('DECRBY', KEYS[1], applied[j]) end
    local kind = 'overflow'
    if string.find(r.err, 'not an integer', 1, true) and i == 1 then kind = 'corrupt' end
    return {0, kind, redis.call('GET', KEYS[1])}
  end
  applied[#applied + 1] = ARGV[i]
end
return {1, redis.call('GET', KEYS[1])}
"""

_PART_MAX = 2**63 - 1
_COUNT = re.compile(rb"(0|-?[1-9][0-9]{0,18})\Z")  # as Redis reads an integer: no leading zero, no "-0"


def _check_delta(delta: object) -> int:
    if not isinstance(delta, int) or isinstance(delta, bool):
        raise TypeError(f"counter delta must be an int, not {type(delta).__name__}")
    return delta


def _parts(delta: int) -> list[str]:
    """``delta`` as increments of one sign that each fit ``INCRBY`` (``[-2**63+1, 2**63-1]``)."""
    sign = -1 if delta < 0 else 1
    rest = abs(delta)
    parts = []
    while True:
        part = min(rest, _PART_MAX)
        parts.append(str(sign * part))
        rest -= part
        if not rest:
            return parts


class SharedCounters:
    """``incr``, ``decr`` and ``get`` of counters kept in Redis (the store binds it as its ``_counters``)."""

    def __init__(self, client: SharedClient, scripts: Scripts) -> None:
        self._client = client
        self._scripts = scripts
        self._prefix = client.names.prefix + b"c:"

    def incr(self, key: object, delta: int = 1) -> int:
        """Add ``delta`` to the counter ``key`` and return the new count."""
        return run(self.incr_steps(key, delta), self._scripts)

    def incr_steps(self, key: object, delta: int = 1) -> Steps[int]:
        """``incr`` as steps."""
        return (yield from self._add_steps(key, _check_delta(delta)))

    def decr(self, key: object, delta: int = 1) -> int:
        """Subtract ``delta`` from the counter ``key`` and return the new count."""
        return run(self.decr_steps(key, delta), self._scripts)

    def decr_steps(self, key: object, delta: int = 1) -> Steps[int]:
        """``decr`` as steps."""
        return (yield from self._add_steps(key, -_check_delta(delta)))

    def get(self, key: object) -> int:
        """The current count of ``key``; 0 for a counter never touched."""
        return run(self.get_steps(key), self._scripts)

    def get_steps(self, key: object) -> Steps[int]:
        """``get`` as steps: one ``GET``."""
        name = self._prefix + encode_key(key)
        return _count(name, (yield Call("counter", None, (), (b"GET", name))))

    def _add_steps(self, key: object, delta: int) -> Steps[int]:
        name = self._prefix + encode_key(key)
        if abs(delta) > COUNTER_MAX - COUNTER_MIN:  # no stored count can absorb it
            self._overflow(key, (yield from self.get_steps(key)) + delta)
        reply: Any = yield Call("incr", INCREMENT, [name], _parts(delta))
        if reply[0] == 1:
            return _count(name, reply[1])
        if reply[1] == b"corrupt":
            raise CorruptRecord(f"counter {name!r} in Redis is corrupt")
        self._overflow(key, _count(name, reply[2]) + delta)

    def _overflow(self, key: object, value: int) -> NoReturn:
        raise OverflowError(f"counter {key!r} would become {shown(value)}, outside the signed 64-bit range")


def _count(name: bytes, raw: object) -> int:
    """A stored count: 0 when missing; ``CorruptRecord`` for anything that is not a signed 64-bit decimal."""
    if raw is None:
        return 0
    if not isinstance(raw, bytes) or not _COUNT.match(raw) or not COUNTER_MIN <= int(raw) <= COUNTER_MAX:
        raise CorruptRecord(f"counter {name!r} in Redis is corrupt")
    return int(raw)

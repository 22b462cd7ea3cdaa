"""Lease locks in Redis: the contract of ``mutex.LeaseLock`` across processes and machines.

In shared mode a named lock (dogpile's ``get_mutex``) must exclude every process
of the namespace, not only this one. A lock on ``name`` is the Redis string
``<namespace prefix>m:<tagged name>`` (apart from the load leases of
``get_or_load``) holding a random token with ``PX lease``:

- ``acquire``: ``SET NX PX``; waiting polls Redis, 2 ms doubling to 50 ms (a
  mutex guards the rare regeneration of one value, not a queue of work);
- ``release``: deletes the lock only while it still holds this handle's token
  (``lease_scripts.UNCLAIM``), so a holder whose lease ran out frees nothing of
  the next holder's; past its lease a lock frees itself, so a holder that
  died, hung or closed its store never wedges it;
- not reentrant, as the local table: a second ``acquire`` of one name waits.

Every call goes through the store's client: bounded by its timeouts, counted in
``shared_calls``, and ``SharedUnavailable`` while Redis is unreachable (a lock
cannot be granted without the authority; a ``release`` that cannot reach Redis
is logged, not raised: the lease ends by itself). A handle used after its store
closed raises ``StoreClosed``, in a forked child ``StoreForked``. Thread-safety: a handle is used by one
holder at a time, as ``threading.Lock``; handles of one name may be shared freely.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from ..codec import Key, encode_key
from ..errors import SharedUnavailable
from ..mutex import Held
from .client import SharedClient
from .lease_scripts import UNCLAIM
from .scripts import Scripts
from .writing import _millis

__all__ = ["SharedLeaseLocks", "SharedLeaseLock"]

log = logging.getLogger("tierstore")

_POLL_MIN, _POLL_MAX = 0.002, 0.05  # seconds between attempts of a waiting acquire


class SharedLeaseLocks:
    """Named lease locks of one namespace in Redis, each held for at most ``lease`` seconds."""

    def __init__(self, client: SharedClient, scripts: Scripts, lease: float, gate: Callable[[], None]) -> None:
        if not lease > 0:
            raise ValueError(f"a lease must be a positive number of seconds, got {lease!r}")
        self._client = client
        self._scripts = scripts
        self.lease = lease
        self.gate = gate  # raises the store's closed (or forked) error: a handle outlives its store

    def lock(self, name: Key) -> SharedLeaseLock:
        """A lock on ``name`` (a str or bytes key); every lock of one name excludes the others, everywhere."""
        return SharedLeaseLock(self, self._client.names.prefix + b"m:" + encode_key(name), name)

    def held(self, name: Key) -> bool:
        """Whether ``name`` is held now (by a lease that has not ended)."""
        return self.lock(name).locked()


class SharedLeaseLock(Held):
    """One handle on a named lease in Redis: ``acquire``/``release``/``locked``, and a context manager."""

    __slots__ = ("_locks", "_key", "_token", "name")

    def __init__(self, locks: SharedLeaseLocks, key: bytes, name: Key) -> None:
        self._locks = locks
        self._key = key
        self._token: bytes | None = None
        self.name = name

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the name; wait for it (at most ``timeout`` seconds) unless ``blocking`` is false."""
        give_up = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        token = os.urandom(16).hex().encode()
        lease_ms = _millis(self._locks.lease)
        client = self._locks._client
        key = self._key
        take = lambda: client.redis.set(key, token, nx=True, px=lease_ms)  # noqa: E731
        pause = _POLL_MIN
        while True:
            self._locks.gate()
            if client.call("mutex", take):
                self._token = token
                return True
            now = time.monotonic()
            if not blocking or (give_up is not None and now >= give_up):
                return False
            time.sleep(pause if give_up is None else min(pause, give_up - now))
            pause = min(pause * 2, _POLL_MAX)

    def release(self) -> None:
        """Give the name back; ``RuntimeError`` when this handle does not hold it."""
        token = self._token
        if token is None:
            raise RuntimeError(f"release of lease lock {self.name!r}, which this handle does not hold")
        self._token = None
        self._locks.gate()
        try:
            self._locks._scripts.run("mutex", UNCLAIM, [self._key], [token])  # frees it only while still this lease
        except SharedUnavailable as exc:  # counted in shared_errors; not raised over the holder's own outcome
            log.warning("tierstore: could not free the lease lock %r (it ends by itself): %s", self.name, exc)

    def locked(self) -> bool:
        """Whether the name is held now, through this handle or another, in any process."""
        self._locks.gate()
        client = self._locks._client
        return bool(client.call("mutex", client.redis.exists, self._key))

    def __repr__(self) -> str:
        return f"SharedLeaseLock({self.name!r})"

"""Store processes for the shared tier's tests: each a spawned process with its own TierStore, driven by commands.

``Worker(url, **options)`` starts a process (``spawn``: nothing inherited) that
opens ``TierStore(shared=url, ...)`` and answers commands sent over a pipe:
``call(name, *args)`` runs ``store.name(*args)`` and returns its result (or
re-raises its exception here, by type name and message); ``start(name, ...)`` /
``result()`` run one without waiting, for races. The routines below (``read_until``,
``write_versions``) run inside the worker, so a loop costs no pipe round trip; a
name ``"module:function"`` runs ``function(store, *args)`` of that module (tests' own routines).
"""

from __future__ import annotations

import importlib
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

from tierstore import SharedUnavailable, TierStore

_CTX = multiprocessing.get_context("spawn")


def read_until(store: TierStore, key: str, last: Any, timeout: float) -> list[Any]:
    """Read ``key`` until it reads ``last`` (or ``timeout``); every distinct value seen, in order."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = store.get(key)
        if not seen or seen[-1] != value:
            seen.append(value)
        if value == last:
            break
    return seen


def write_values(store: TierStore, key: str, values: list[Any], pause: float, versioned: bool) -> int:
    """``set`` each value in turn (with ``version=value`` when ``versioned``); how many landed."""
    landed = 0
    for value in values:
        landed += store.set(key, value, version=value if versioned else None)
        if pause:
            time.sleep(pause)
    return landed


def write_versions(store: TierStore, key: str, versions: list[int], tag: str, start_at: float) -> list[int]:
    """From the wall-clock moment ``start_at`` (shared by the racers), ``set(key, [tag, v], version=v)``
    for each version; the versions that landed."""
    time.sleep(max(0.0, start_at - time.time()))
    return [v for v in versions if store.set(key, [tag, v], version=v)]


def add_at(store: TierStore, keys: list[str], tag: str, start_at: float) -> list[str]:
    """From the wall-clock moment ``start_at`` (shared by the racers), ``add(key, tag)`` for each key;
    the keys this process added."""
    time.sleep(max(0.0, start_at - time.time()))
    return [key for key in keys if store.add(key, tag)]


def listed(store: TierStore, prefix: str | bytes | None) -> list[str | bytes]:
    """``list(store.keys(prefix))``: a generator does not cross the pipe."""
    return list(store.keys(prefix))


def setv(store: TierStore, key: str, value: Any, version: int) -> bool:
    return store.set(key, value, version=version)


def entry(store: TierStore, key: str) -> tuple[Any, int] | None:
    found = store.get_entry(key)
    return None if found is None else (found.value, found.version)


def churn(store: TierStore, me: str, keys: list[str], until: float) -> tuple[list[Any], list[Any]]:
    """Until ``time.monotonic()`` reaches ``until`` (one clock for every process on the host), write
    ``me`` = 1, 2, 3... and read ``keys`` in turn; every call logged with its start and end.

    Returns ``(writes, reads)``: ``(n, landed, started, ended)`` with ``landed`` ``None`` when it raised
    ``SharedUnavailable``, and ``(key, value, raised, started, ended)``.
    """
    writes: list[Any] = []
    reads: list[Any] = []
    n = 0
    while time.monotonic() < until:
        n += 1
        started = time.monotonic()
        try:
            landed: bool | None = store.set(me, n)
        except SharedUnavailable:
            landed = None
        writes.append((n, landed, started, time.monotonic()))
        for key in keys:
            started = time.monotonic()
            try:
                value, raised = store.get(key), False
            except SharedUnavailable:
                value, raised = None, True
            reads.append((key, value, raised, started, time.monotonic()))
        time.sleep(0.005)
    return writes, reads


ROUTINES = {
    "churn": churn,
    "read_until": read_until,
    "write_values": write_values,
    "write_versions": write_versions,
    "entry": entry,
    "setv": setv,
    "add_at": add_at,
    "listed": listed,
}


def _imported(name: str) -> Any:
    """The function ``module:function`` names; ``None`` for a plain name (a call of the store)."""
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function) if function else None


def _serve(conn: Connection, url: str, options: dict[str, Any]) -> None:
    try:
        store = TierStore(shared=url, **options)
    except BaseException as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
        return
    conn.send(("ok", None))
    with store:
        while True:
            command = conn.recv()
            if command is None:
                break
            name, args = command
            try:
                routine = ROUTINES.get(name) or _imported(name)
                result = routine(store, *args) if routine else getattr(store, name)(*args)
                conn.send(("ok", result))
            except BaseException as exc:
                conn.send(("error", type(exc).__name__, str(exc)))
    conn.send(("ok", "closed"))


class WorkerError(Exception):
    """An exception raised in a worker: ``kind`` is its type's name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class Worker:
    """One store in its own process."""

    def __init__(self, url: str, **options: Any) -> None:
        self._conn, child = _CTX.Pipe()
        self.process = _CTX.Process(target=_serve, args=(child, url, options), daemon=True)
        self.process.start()
        self._answer(timeout=60)

    def _answer(self, timeout: float = 60) -> Any:
        if not self._conn.poll(timeout):
            raise TimeoutError("the worker did not answer")
        reply = self._conn.recv()
        if reply[0] == "error":
            raise WorkerError(reply[1], reply[2])
        return reply[1]

    def start(self, name: str, *args: Any) -> None:
        self._conn.send((name, args))

    def result(self, timeout: float = 60) -> Any:
        return self._answer(timeout)

    def call(self, name: str, *args: Any, timeout: float = 60) -> Any:
        self.start(name, *args)
        return self.result(timeout)

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = self.call("stats")
        return stats

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self._conn.send(None)
                self._answer(timeout=30)
            except (OSError, EOFError, TimeoutError, WorkerError):
                pass
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(10)

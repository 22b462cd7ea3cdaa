"""The worker processes of the shared sections: each opens every peer and runs what the coordinator sends.

``Workers(spec, count)`` spawns ``count`` processes (``spawn``: nothing
inherited, as separate service workers would be). Each builds the key space,
opens every peer (``shared_peers``) and answers one command at a time over its
pipe. A timed run is two commands: ``prepare`` builds the operations (untimed),
``go`` waits for a moment given to every worker at once and runs them, timing
one op in ``sample_every`` (``measure.drive``). Start and end are read on
``time.monotonic_ns``, one clock for every process on Linux (CLOCK_MONOTONIC),
so the coordinator can take the span from the first start to the last end.
``go`` also reports the process's CPU time and context switches over its run
(``getrusage``: every thread, so a store's listener counts too).
The coherence checks and the invalidation-lag writer and reader run inside
the workers too, so their loops cost no pipe round trip.
"""

from __future__ import annotations

import gc
import multiprocessing
import resource
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .measure import Batch, batches, drive
from .shared_peers import Peer, open_peer, source
from .workloads import KeySpace, Workload, make_sequence

__all__ = ["Spec", "Workers", "LAG_KEY"]

_CTX = multiprocessing.get_context("spawn")
LAG_KEY = "lag"
_COMMANDS = frozenset(
    {"prefill", "read_all", "prepare", "go", "stats", "write_check", "read_check", "verify", "restore"}
    | {"lag_write", "lag_read", "stream_write"}
)
STREAM_KEYS = 100  # the keys a stream writer cycles over (none is the lag key)


@dataclass(frozen=True)
class Spec:
    """What every worker opens: the server, the namespace, the shared diskcache directory and the key space."""

    url: str
    socket: str
    namespace: str
    directory: str
    capacity: int
    keys: int
    zipf_s: float
    seed: int
    sample_every: int
    peers: tuple[str, ...]


class _Worker:
    """The state of one worker process: its key space, its peers and the run it prepared."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.space = KeySpace(spec.keys, spec.zipf_s, spec.seed)
        self.peers: dict[str, Peer] = {}
        for name in spec.peers:
            self.peers[name] = open_peer(
                name, url=spec.url, socket=spec.socket, namespace=spec.namespace,
                directory=spec.directory, capacity=spec.capacity,
            )  # fmt: skip
        self.work: list[Batch] = []
        self.peer: Peer | None = None
        self.gets = 0

    def close(self) -> None:
        for peer in self.peers.values():
            peer.close()

    def prefill(self, name: str, part: int, parts: int) -> int:
        """Write this worker's share of the keys (every ``parts``-th, coldest first) into peer ``name``."""
        space = self.space
        pairs = [(space.names[i], space.value(i)) for i in space.prefill_order()[part::parts]]
        self.peers[name].fill(pairs)
        return len(pairs)

    def read_all(self, name: str) -> int:
        """Read every key once through peer ``name`` (tierstore: each worker's tier 2 then holds the data set)."""
        get = self.peers[name].get
        return sum(1 for key in self.space.names if get(key) is not None)

    def prepare(self, name: str, distribution: str, set_fraction: float, ops: int, seed: int) -> int:
        """Build ``ops`` operations of the workload on peer ``name``; ``go`` runs them."""
        peer = self.peers[name]
        sequence = make_sequence(self.space, Workload("shared", distribution, set_fraction), ops, seed)
        read, put = peer.reader(self.space), peer.put
        calls: list[tuple[Callable[[Any, Any], Any], Any, Any]] = [
            (read, key, None) if value is None else (put, key, value)
            for key, value in zip(sequence.keys, sequence.values, strict=True)
        ]
        self.work = batches(calls, self.spec.sample_every)
        self.peer = peer
        self.gets = sum(1 for value in sequence.values if value is None)
        return len(calls)

    def go(self, start_at_ns: int) -> dict[str, Any]:
        """Run the prepared operations from ``start_at_ns`` (``monotonic_ns``); what they measured."""
        assert self.peer is not None, "go before prepare"
        misses = self.peer.misses
        before = misses[0]
        samples: list[int] = []
        gc.collect()
        time.sleep(max(0, start_at_ns - time.monotonic_ns()) / 1e9)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic_ns()
        drive(self.work, samples)
        ended = time.monotonic_ns()
        spent = _spent(usage, resource.getrusage(resource.RUSAGE_SELF))
        ops = sum(len(rest) + 1 for _, rest in self.work)
        self.work = []
        return {"ops": ops, "gets": self.gets, "misses": misses[0] - before, "start_ns": started,
                "end_ns": ended, "samples": samples, **spent}  # fmt: skip

    def stats(self, name: str) -> dict[str, int]:
        return self.peers[name].stats()

    def write_check(self, name: str, keys: Sequence[str], tag: str) -> None:
        """Set each key to a value no run writes (``{"check": tag}``)."""
        put = self.peers[name].put
        for key in keys:
            put(key, {"check": tag, "key": key})

    def read_check(self, name: str, keys: Sequence[str], tag: str | None, timeout: float) -> tuple[int, float]:
        """Read the keys until each reads its check value (``tag`` None: the source's) or ``timeout``.

        Returns how many did and the seconds that took.
        """
        get, space = self.peers[name].get, self.space

        def expected(key: str) -> Any:
            return source(space, key) if tag is None else {"check": tag, "key": key}

        pending = set(keys)
        started = time.monotonic()
        deadline = started + timeout
        while pending and time.monotonic() < deadline:
            pending = {key for key in pending if get(key) != expected(key)}
        return len(keys) - len(pending), time.monotonic() - started

    def verify(self, name: str, keys: Sequence[str]) -> int:
        """How many of ``keys`` do not read as the source of truth's value."""
        get, space = self.peers[name].get, self.space
        return sum(1 for key in keys if get(key) != source(space, key))

    def restore(self, name: str, keys: Sequence[str]) -> None:
        """Set the keys back to the source of truth's values."""
        put, space = self.peers[name].put, self.space
        for key in keys:
            put(key, source(space, key))

    def lag_write(self, first: int, writes: int, pause: float) -> list[float]:
        """Set the lag key to ``first`` .. ``first + writes - 1`` through tierstore, ``pause`` s apart.

        Returns the ``monotonic`` moment each set returned.
        """
        put = self.peers["tierstore"].put
        returned = []
        for value in range(first, first + writes):
            put(LAG_KEY, value)
            returned.append(time.monotonic())
            time.sleep(pause)
        return returned

    def stream_write(self, duration: float, pause: float) -> int:
        """Set keys other than the lag key through tierstore, ``pause`` s apart, for ``duration`` s; how many."""
        put = self.peers["tierstore"].put
        end = time.monotonic() + duration
        count = 0
        while time.monotonic() < end:
            put(f"stream:{count % STREAM_KEYS}", count)
            count += 1
            time.sleep(pause)
        return count

    def lag_read(self, conn: Connection, writes: int, poll: float, timeout: float) -> dict[int, float]:
        """Poll the lag key every ``poll`` s; the moment each value was first read (tells ``ready`` first).

        Ready once the key reads 0 twice: tier 1 then holds it (second-read admission), so a
        read of the next value needed the invalidation to drop that copy.
        """
        get = self.peers["tierstore"].get
        deadline = time.monotonic() + timeout
        while get(LAG_KEY) != 0 and time.monotonic() < deadline:
            time.sleep(poll)
        get(LAG_KEY)
        conn.send(("ready", None))
        seen: dict[int, float] = {}
        last = 0
        while last < writes and time.monotonic() < deadline:
            value = get(LAG_KEY)
            if isinstance(value, int) and value > last:
                seen[value] = time.monotonic()
                last = value
            time.sleep(poll)
        return seen


def _spent(before: resource.struct_rusage, after: resource.struct_rusage) -> dict[str, int]:
    """The process's CPU time (every thread: its listener's too) and context switches between two readings."""
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "cpu_ns": round(cpu_s * 1e9),
        "voluntary_switches": after.ru_nvcsw - before.ru_nvcsw,
        "involuntary_switches": after.ru_nivcsw - before.ru_nivcsw,
    }


def _serve(conn: Connection, spec: Spec) -> None:
    try:
        state = _Worker(spec)
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", None))
    try:
        while True:
            command = conn.recv()
            if command is None:
                break
            name, args = command
            try:
                if name not in _COMMANDS:
                    raise ValueError(f"unknown command {name!r}")
                handler = getattr(state, name)
                result = handler(conn, *args) if name == "lag_read" else handler(*args)
                conn.send(("ok", result))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        state.close()
    conn.send(("ok", "closed"))


class Workers:
    """``count`` worker processes; ``each`` sends a command to every one and gathers the replies in order."""

    def __init__(self, spec: Spec, count: int, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self.conns: list[Connection] = []
        self.processes: list[Any] = []
        try:
            for index in range(count):
                ours, theirs = _CTX.Pipe()
                process = _CTX.Process(target=_serve, args=(theirs, spec), name=f"bench-shared-{index}", daemon=True)
                process.start()
                theirs.close()
                self.conns.append(ours)
                self.processes.append(process)
            for index in range(count):
                self.receive(index)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.conns)

    def send(self, index: int, name: str, *args: Any) -> None:
        self.conns[index].send((name, args))

    def receive(self, index: int, timeout: float | None = None) -> Any:
        """The next reply of worker ``index``; its error raised here as ``RuntimeError``."""
        conn = self.conns[index]
        if not conn.poll(self.timeout if timeout is None else timeout):
            raise TimeoutError(f"shared bench worker {index} did not answer")
        kind, value = conn.recv()
        if kind == "error":
            raise RuntimeError(f"shared bench worker {index}: {value}")
        return value

    def call(self, index: int, name: str, *args: Any) -> Any:
        self.send(index, name, *args)
        return self.receive(index)

    def each(self, name: str, *args: Any) -> list[Any]:
        """Send ``name`` with ``args`` to every worker at once, then gather every reply, in worker order."""
        return self.each_with(name, [args] * len(self.conns))

    def each_with(self, name: str, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``name`` with ``args[i]`` to worker ``i``, for every worker at once; then gather every reply."""
        for index, arguments in enumerate(args):
            self.send(index, name, *arguments)
        return [self.receive(index) for index in range(len(args))]

    def close(self) -> None:
        """Ask every worker to close its peers and exit; kill one that does not."""
        for conn, process in zip(self.conns, self.processes, strict=True):
            if process.is_alive():
                try:
                    conn.send(None)
                    while conn.poll(30) and conn.recv() != ("ok", "closed"):
                        pass
                except (OSError, EOFError):
                    pass
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(10)
            conn.close()
        self.conns, self.processes = [], []

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

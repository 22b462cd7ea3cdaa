"""Processes: fork after open, double opens in every order, and opens that fail half way.

A store belongs to the process that opened it: in a forked child every call
raises ``StoreForked`` and the parent's directory is never touched; a refused
second open never weakens the directory lock; a failed open releases what it
opened.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tierstore import StoreForked, StoreLocked, TierStore
from tierstore.cli import main as cli_main
from tierstore.counters import counter_key

ENTRIES = 300
ROOT = str(Path(__file__).resolve().parents[2])


def fill(store: TierStore, n: int = ENTRIES) -> None:
    for i in range(n):
        store.set(f"k{i}", {"i": i, "pad": "x" * 50}, version=i + 1)
    store.incr("hits", 7)
    store.index("board").add_many([(f"m{i}", float(i)) for i in range(20)])


def check_whole(store: TierStore, n: int = ENTRIES) -> None:
    for i in range(n):
        assert store.get(f"k{i}") == {"i": i, "pad": "x" * 50}, f"k{i} lost"
        entry = store.get_entry(f"k{i}")
        assert entry is not None and entry.version == i + 1
    assert store.counter("hits") == 7
    assert [member for member, _ in store.index("board").page(0, 100)] == [f"m{i}" for i in range(20)]


def in_child(calls: list[tuple[str, Callable[[], Any]]], timeout: float = 20.0) -> dict[str, str]:
    """Fork; in the child run each call and report how it ended ("StoreForked", "ok", or another type)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read_end)
            outcome: dict[str, str] = {}
            for name, call in calls:
                try:
                    call()
                    outcome[name] = "ok"
                except StoreForked:
                    outcome[name] = "StoreForked"
                except BaseException as exc:
                    outcome[name] = f"{type(exc).__name__}: {exc}"
            os.write(write_end, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    result: dict[str, str] = json.loads(data)
    return result


def _read_calls(store: TierStore) -> list[tuple[str, Callable[[], Any]]]:
    index = store.index("board")
    return [
        ("get", lambda: store.get("k1")),
        ("get_entry", lambda: store.get_entry("k1")),
        ("contains", lambda: "k1" in store),
        ("getitem", lambda: store["k1"]),
        ("keys", lambda: list(store.keys())),
        ("items", lambda: list(store.items())),
        ("get_or_load", lambda: store.get_or_load("k1", lambda: 1)),
        ("counter", lambda: store.counter("hits")),
        ("index", lambda: store.index("board")),
        ("page", lambda: index.page(0, 5)),
        ("rank", lambda: index.rank("m1")),
        ("score", lambda: index.score("m1")),
        ("len_index", lambda: len(index)),
        ("stats", store.stats),
        ("drain", store.drain),
        ("len", lambda: len(store)),
        ("get_many", lambda: store.get_many(["k1", "k2"])),
    ]


def _write_calls(store: TierStore) -> list[tuple[str, Callable[[], Any]]]:
    index = store.index("board")
    return [
        ("set", lambda: store.set("k1", "child")),
        ("set_version", lambda: store.set("k1", "child", version=10**6)),
        ("setitem", lambda: store.__setitem__("new", 1)),
        ("delete", lambda: store.delete("k2")),
        ("delitem", lambda: store.__delitem__("k3")),
        ("invalidate", lambda: store.invalidate("k4")),
        ("get_or_load_miss", lambda: store.get_or_load("absent", lambda: "child")),
        ("incr", lambda: store.incr("hits")),
        ("decr", lambda: store.decr("hits")),
        ("index_add", lambda: index.add("m1", 99.0)),
        ("index_remove", lambda: index.remove("m2")),
        ("index_replace", lambda: index.replace([("z", 1.0)])),
        ("sweep", store.sweep),
        ("checkpoint", store.checkpoint),
        ("refresh_every", lambda: store.refresh_every("r", lambda: 1, 60)),
        ("keep_fresh", lambda: store.keep_fresh("board", lambda: [("z", 1.0)])),
        ("add", lambda: store.add("new", 1)),
        ("touch", lambda: store.touch("k1", ttl=5)),
        ("pop", lambda: store.pop("k1")),
        ("set_many", lambda: store.set_many({"k1": "child", "new": 1})),
        ("delete_many", lambda: store.delete_many(["k1", "k2"])),
        ("delete_prefix", lambda: store.delete_prefix("k")),
        ("clear", store.clear),
        ("cache_clear", store.cached(name="child")(len).cache_clear),
    ]


def _close_calls(store: TierStore) -> list[tuple[str, Callable[[], Any]]]:
    return [
        ("enter", store.__enter__),  # a with block in the child fails at its start, not at its end
        ("close", store.close),
        ("exit", lambda: store.__exit__(None, None, None)),
        ("again", store.close),
    ]


@pytest.mark.parametrize("shape", ["reads", "writes", "closes"])
def test_every_call_in_a_forked_child_raises_and_the_parent_loses_nothing(tmp_path: Path, shape: str) -> None:
    path, persist = str(tmp_path / "store"), str(tmp_path / "persist")
    with TierStore(path, persist_path=persist) as store:
        fill(store)
        store.checkpoint()
        calls = {"reads": _read_calls, "writes": _write_calls, "closes": _close_calls}[shape](store)
        outcome = in_child(calls)
        assert outcome == {name: "StoreForked" for name, _ in calls}
        check_whole(store)  # the parent carries on: reads, then writes
        store.set("after", 1)
        store.incr("hits", 0)
        store.checkpoint()
    with TierStore(path, persist_path=persist) as reopened:
        check_whole(reopened)
        assert reopened.get("after") == 1
        assert reopened.get("new") is None and reopened.get("absent") is None


def test_a_child_that_forks_many_times_and_writes_never_corrupts_the_parent(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with TierStore(path) as store:
        fill(store)
        for round_ in range(5):
            outcome = in_child([(f"set{i}", lambda i=i: store.set(f"k{i}", "child")) for i in range(20)])
            assert set(outcome.values()) == {"StoreForked"}
            store.set(f"parent{round_}", round_)
    with TierStore(path) as reopened:
        check_whole(reopened)
        assert [reopened.get(f"parent{r}") for r in range(5)] == list(range(5))


def test_a_lock_held_by_a_parent_thread_at_the_fork_does_not_hang_the_child(tmp_path: Path) -> None:
    """Only the forking thread lives on in the child: a lock another thread held stays held there."""
    with TierStore(str(tmp_path / "store")) as store:
        fill(store)
        index = store.index("board")
        stripes = store._stripes  # the store's writers and its counters share them
        stripe_locks = [stripes.lock_for("k1"), stripes.lock_for(counter_key("hits"))]
        held = list({id(lock): lock for lock in stripe_locks}.values())
        held.append(index._lock)
        for lock in held:
            lock.acquire()
        try:
            outcome = in_child(
                [
                    ("index_add", lambda: index.add("m1", 1.0)),
                    ("page", lambda: index.page()),
                    ("set", lambda: store.set("k1", 1)),
                    ("incr", lambda: store.incr("hits")),
                ],
                timeout=10,
            )
        finally:
            for lock in held:
                lock.release()
        assert set(outcome.values()) == {"StoreForked"}
        check_whole(store)


def test_a_child_opens_stores_of_its_own_but_not_its_parents(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    own = str(tmp_path / "child-store")

    def open_own() -> None:
        with TierStore(own) as child_store:
            child_store.set("mine", 1)
            assert child_store.get("mine") == 1

    def open_parents() -> None:
        TierStore(path)

    with TierStore(path) as store:
        fill(store)
        outcome = in_child([("own", open_own), ("parents", open_parents)])
        assert outcome["own"] == "ok"
        assert outcome["parents"].startswith("StoreLocked") and "forked from one that had it open" in outcome["parents"]
        check_whole(store)
    with TierStore(own) as child_store:
        assert child_store.get("mine") == 1


CHILD_EXITS_NORMALLY = """
import gc, os, sys
from tierstore import StoreForked, TierStore
store = TierStore(sys.argv[1], persist_path=sys.argv[2])
for i in range(2000):
    store.set(f"k{i}", i)
index = store.index("i")
index.add("m", 1.0)
pid = os.fork()
if pid == 0:
    try:
        store.set("child", 1)
        sys.exit(3)
    except StoreForked:
        pass
    del store, index
    gc.collect()
    sys.exit(0)  # a normal exit: interpreter shutdown, garbage collection, atexit
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
for i in range(2000, 3000):
    store.set(f"k{i}", i)
store.close()
print("parent done")
"""


def test_a_child_that_exits_normally_never_releases_the_parents_handle(tmp_path: Path) -> None:
    path, persist = str(tmp_path / "store"), str(tmp_path / "persist")
    done = subprocess.run(
        [sys.executable, "-c", CHILD_EXITS_NORMALLY, path, persist], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "parent done" in done.stdout
    with TierStore(path) as store:
        assert [store.get(f"k{i}") for i in range(3000)] == list(range(3000))
        assert store.get("child") is None


# -- double opens --------------------------------------------------------------------------

HOLD = """
import sys
from tierstore import StoreLocked, TierStore
try:
    store = TierStore(sys.argv[1])
except StoreLocked as exc:
    print("locked", exc, flush=True)
    sys.exit(0)
store.set("other-process", 1)
print("opened", flush=True)
sys.stdin.readline()
store.close()
"""


class Other:
    """Another process that opens a path and, when it got it, holds it until released."""

    def __init__(self, path: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.answer = self.proc.stdout.readline().split()[0]

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        assert self.proc.wait(30) == 0


def other_open(path: str) -> str:
    """``"opened"`` or ``"locked"``: what another process gets when it opens ``path``."""
    other = Other(path)
    other.release()
    return other.answer


def _spellings(tmp_path: Path, path: str) -> list[Any]:
    link = tmp_path / "link"
    if not link.exists():
        link.symlink_to(path)
    relative = os.path.relpath(path)
    return [path, path + "/", Path(path), str(link), relative, os.path.join(path, "..", "store")]


def test_a_refused_second_open_in_process_keeps_the_directory_locked(tmp_path: Path) -> None:
    """LevelDB drops its fcntl lock when it refuses an in-process re-open; the registry asks first."""
    path = str(tmp_path / "store")
    with TierStore(path) as store:
        fill(store)
        for spelling in _spellings(tmp_path, path):
            with pytest.raises(StoreLocked, match="already open in this process"):
                TierStore(spelling)
        assert other_open(path) == "locked"
        check_whole(store)
        store.set("still", 1)
    assert other_open(path) == "opened"
    with TierStore(path) as store:
        check_whole(store)
        assert store.get("other-process") == 1 and store.get("still") == 1


def test_a_directory_held_by_another_process_refuses_every_open_in_every_order(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with TierStore(path) as store:
        fill(store)
    holder = Other(path)
    try:
        assert holder.answer == "opened"
        for _ in range(2):
            with pytest.raises(StoreLocked, match="in use by another process"):
                TierStore(path)
        assert other_open(path) == "locked"
        with pytest.raises(StoreLocked):
            TierStore(path)
    finally:
        holder.release()
    with TierStore(path) as store:  # free again once the holder closed
        check_whole(store)
        assert other_open(path) == "locked"
        with pytest.raises(StoreLocked):
            TierStore(path)
    assert other_open(path) == "opened"


def test_a_closed_store_frees_its_place_for_a_reopen_in_process(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    for round_ in range(3):
        with TierStore(path) as store:
            store.set(f"r{round_}", round_)
    with TierStore(path) as store:
        assert [store.get(f"r{r}") for r in range(3)] == [0, 1, 2]


def test_a_checkpoint_into_a_directory_open_in_process_keeps_its_lock(tmp_path: Path) -> None:
    """persist_path opens go through the registry too."""
    busy, path = str(tmp_path / "busy"), str(tmp_path / "store")
    with TierStore(path) as store:
        store.set("made", 1)  # a working directory with data: opening it restores nothing
    with TierStore(busy) as occupant:
        occupant.set("x", 1)
        with pytest.raises(StoreLocked):  # a restore would read the checkpoint path: it is busy
            TierStore(str(tmp_path / "fresh"), persist_path=busy)
        assert other_open(busy) == "locked"
        with TierStore(path, persist_path=busy, checkpoint_interval=None) as store:
            fill(store)
            with pytest.raises(StoreLocked):
                store.checkpoint()
            assert other_open(busy) == "locked"
            check_whole(store)
        assert occupant.get("x") == 1


def test_two_stores_checkpointing_into_one_path_in_one_process(tmp_path: Path) -> None:
    persist = str(tmp_path / "persist")
    with (
        TierStore(str(tmp_path / "a"), persist_path=persist, checkpoint_interval=None) as first,
        TierStore(str(tmp_path / "b"), persist_path=persist, checkpoint_interval=None) as second,
    ):
        first.set("a", 1)
        second.set("b", 2)
        first.checkpoint()
        second.checkpoint()  # one after the other: each opens and closes the path
        assert other_open(persist) == "opened"


def test_the_cli_in_process_on_an_open_store_keeps_its_lock(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "store")
    with TierStore(path) as store:
        fill(store)
        for command in (["inspect", path], ["verify", path], ["get", path, "k1"]):
            caplog.clear()
            assert cli_main(command) == 2
            assert "in use" in caplog.text
        assert other_open(path) == "locked"
        check_whole(store)


# -- opens that fail half way ----------------------------------------------------------------


class Injected(Exception):
    """The fault injected into an open."""


def _fail_at_call(number: int) -> Callable[..., Any]:
    """A trace function raising ``Injected`` at the ``number``-th call of tierstore code."""
    count = [0]

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and "/tierstore/" in frame.f_code.co_filename:
            count[0] += 1
            if count[0] == number:
                raise Injected(f"at call {number}: {frame.f_code.co_name}")
        return None

    return trace


def _calls_during_open(path: str, **settings: Any) -> int:
    count = [0]

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and "/tierstore/" in frame.f_code.co_filename:
            count[0] += 1
        return None

    sys.settrace(trace)
    try:
        store = TierStore(path, **settings)
    finally:
        sys.settrace(None)
    store.close()
    return count[0]


def test_an_open_failing_at_any_step_releases_everything(tmp_path: Path) -> None:
    """Every failed open closes what it opened: the directory is free at once, in this process and others."""
    path, persist = str(tmp_path / "store"), str(tmp_path / "persist")
    settings: dict[str, Any] = {"persist_path": persist, "guard": True, "disk_capacity_bytes": 10**7}
    with TierStore(path, **settings) as store:
        fill(store)
    total = _calls_during_open(path, **settings)
    assert total > 50
    before = set(threading.enumerate())
    failures = 0
    for number in range(1, total + 1):
        sys.settrace(_fail_at_call(number))
        try:
            store = TierStore(path, **settings)
        except Injected:
            failures += 1
        else:
            store.close()
        finally:
            sys.settrace(None)
        with TierStore(path, **settings) as reopened:  # not StoreLocked: the failed open let go
            if number % 25 == 0:
                check_whole(reopened)
    assert failures > total // 2
    assert other_open(path) == "opened"
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leftover, leftover
    with TierStore(path, **settings) as store:
        check_whole(store)


def test_an_iterator_made_before_the_fork_never_touches_the_handle_in_the_child(tmp_path: Path) -> None:
    """Closing a scan's iterator releases its LevelDB snapshot; in a child that release is skipped."""
    with TierStore(str(tmp_path / "store")) as store:
        fill(store)
        keys = store.keys()
        assert next(keys) == "k0"  # the scan holds a snapshot of the parent's handle

        def close_quietly() -> None:
            unraisable: list[str] = []
            sys.unraisablehook = lambda info: unraisable.append(repr(info.exc_value))
            keys.close()
            gc.collect()  # the inner scan generators are finalized here
            assert not unraisable, unraisable

        outcome = in_child([("close", close_quietly)])
        assert outcome == {"close": "ok"}
        assert len(list(keys)) == ENTRIES - 1  # the parent's iterator carries on
        check_whole(store)


RESTORE_AND_HOLD = """
import sys
from tierstore import TierStore, restore

def pause(point):
    if point == "restore-built":  # the copy is built; the working path is about to be replaced
        print("paused", flush=True)
        sys.stdin.readline()

restore._hook = pause
store = TierStore(sys.argv[1], persist_path=sys.argv[2], checkpoint_interval=None)
store.set("acknowledged", "by the restoring process")
print("opened", flush=True)
sys.stdin.readline()
store.close()
"""


def test_two_processes_restoring_one_lost_directory_never_replace_each_others(tmp_path: Path) -> None:
    """While one process restores a lost directory, another process's open is refused
    (StoreLocked) and replaces nothing; once restored and open there, likewise."""
    path, persist = str(tmp_path / "store"), str(tmp_path / "persist")
    with TierStore(path, persist_path=persist) as store:
        fill(store)
    shutil.rmtree(path)  # lost: the next opens restore it
    command = [sys.executable, "-c", RESTORE_AND_HOLD, path, persist]
    other = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert other.stdin is not None and other.stdout is not None
    try:
        assert other.stdout.readline().strip() == "paused"
        for _ in range(3):  # while the other process restores, this one is refused and touches nothing
            with pytest.raises(StoreLocked):
                TierStore(path, persist_path=persist)
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "opened"
        with pytest.raises(StoreLocked):  # restored and open there now
            TierStore(path, persist_path=persist)
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.wait(30) == 0
    finally:
        if other.poll() is None:
            other.kill()
    with TierStore(path, persist_path=persist) as store:
        check_whole(store)
        assert store.get("acknowledged") == "by the restoring process"
    assert not list(tmp_path.glob("*.restoring*"))

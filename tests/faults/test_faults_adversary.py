"""Adversarial findings (wip-adversary): each test fails on the code it was written against.

Real LevelDB directories, real threads and processes; interleavings are forced
with the package's own test hooks and ``sys.setprofile``, never with sleeps.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tierstore import NotAStore, StoreLocked, TierStore, TierStoreError
from tierstore import restore as restore_module
from tierstore._plyvel import plyvel

ROOT = str(Path(__file__).resolve().parents[2])


def pause_thread_at(code: Any, reached: threading.Event, go: threading.Event) -> Any:
    """A profile function for one thread: on entering ``code`` it signals ``reached`` and waits for ``go``."""

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is code:
            reached.set()
            assert go.wait(20), "the test never released the paused thread"

    return profile


def make_checkpoint(work: Path, persist: Path, n: int = 10) -> None:
    with TierStore(work, persist_path=persist, checkpoint_interval=None) as store:
        for i in range(n):
            store.set(f"k{i}", i)
    shutil.rmtree(work)  # the working directory is lost: the next open restores


# -- data loss -------------------------------------------------------------------------


def test_a_second_open_restoring_the_same_directory_deletes_the_first_stores_live_directory(tmp_path: Path) -> None:
    """Two opens of one lost working directory at once (two threads, say a lazily opened backend).

    Thread B sees the directory missing and goes to restore; meanwhile A restores,
    opens it and acknowledges a write. B then builds its own copy, ``rmtree``s the
    directory A holds open (never asking the registry) and renames its copy in,
    and only then meets ``StoreLocked``. A keeps writing into unlinked files:
    everything A wrote is gone at the next open. The process rules (README "Decisions"): a refused
    second open never weakens the lock; the registry is checked before the
    directory is touched.
    """
    work, persist = tmp_path / "w", tmp_path / "p"
    make_checkpoint(work, persist)
    reached, go = threading.Event(), threading.Event()
    outcome: list[Any] = []

    def second_open() -> None:
        sys.setprofile(pause_thread_at(restore_module._open_checkpoint.__code__, reached, go))
        try:
            outcome.append(TierStore(work, persist_path=persist, checkpoint_interval=None))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            sys.setprofile(None)

    thread = threading.Thread(target=second_open, daemon=True)
    thread.start()
    assert reached.wait(20)  # B has decided the directory is missing and is about to restore
    first = TierStore(work, persist_path=persist, checkpoint_interval=None)
    try:
        assert first.set("acknowledged", "before")
        go.set()
        thread.join(20)
        assert isinstance(outcome[0], StoreLocked), outcome
        assert first.set("acknowledged2", "after")
    finally:
        go.set()
        first.close()
    with TierStore(work, persist_path=persist, checkpoint_interval=None) as again:
        assert again.get("k1") == 1
        assert again.get("acknowledged") == "before", "an acknowledged write of the open store was lost"
        assert again.get("acknowledged2") == "after", "an acknowledged write of the open store was lost"


def test_a_checkpoint_into_another_stores_working_directory_deletes_its_entries(tmp_path: Path) -> None:
    """Store B's persist_path is store A's working directory (a configuration slip).

    While A is open B's checkpoint is refused (StoreLocked), but once A is closed
    B's checkpoint runs a full resync into A's directory and deletes every record
    of A. A directory that is a store's working directory (no checkpoint record,
    a tierstore schema) is not a checkpoint: refuse it, never wipe it.
    """
    a_path, b_path = tmp_path / "A", tmp_path / "B"
    b = TierStore(b_path, persist_path=a_path, checkpoint_interval=None)
    try:
        b.set("b-key", 1)
        with TierStore(a_path, checkpoint_interval=None) as a:
            a.set("a-key", "A's only copy")
            a.incr("a-counter", 5)
        try:
            b.checkpoint()
        except TierStoreError:
            pass  # refusing is the right answer
    finally:
        b.close()  # (its final checkpoint may also be refused: logged)
    with TierStore(a_path) as a:
        assert a.get("a-key") == "A's only copy", "B's checkpoint wiped store A's working directory"
        assert a.counter("a-counter") == 5


def _try_checkpoint(work: Path, persist: Path, key: str) -> None:
    """A store at ``work`` writes ``key`` and checkpoints into ``persist``; refusing is the right answer."""
    with TierStore(work, persist_path=persist, checkpoint_interval=None) as store:
        store.set(key, 1)
        try:
            store.checkpoint()
        except TierStoreError:
            pass


def test_a_checkpoint_into_a_foreign_leveldb_deletes_its_records(tmp_path: Path) -> None:
    """persist_path names an existing LevelDB of another program (no tierstore schema record).

    The open path refuses such a directory ("not a tierstore (no schema record)"),
    but a checkpoint opens it, finds no generation, runs a full resync and
    deletes every record it holds. A checkpoint must refuse a directory that is
    not a tierstore checkpoint.
    """
    foreign = tmp_path / "foreign"
    db = plyvel.DB(str(foreign), create_if_missing=True)
    db.put(b"app-row-1", b"precious")
    db.put(b"zzz", b"precious too")
    db.close()
    _try_checkpoint(tmp_path / "w", foreign, "a")
    db = plyvel.DB(str(foreign))
    try:
        assert db.get(b"app-row-1") == b"precious", "a checkpoint deleted another program's LevelDB records"
        assert db.get(b"zzz") == b"precious too"
    finally:
        db.close()


def test_a_checkpoint_overwrites_a_checkpoint_of_a_newer_schema(tmp_path: Path) -> None:
    """Restore refuses a checkpoint written by a newer tierstore (SchemaTooNew); the
    checkpointer does not check the schema at all and resyncs over it, so an
    older version silently destroys a newer one's checkpoint (and marks it schema 1)."""
    persist = tmp_path / "p"
    with TierStore(tmp_path / "w1", persist_path=persist, checkpoint_interval=None) as newer:
        newer.set("from-newer", 1)
    db = plyvel.DB(str(persist))
    db.put(b"mschema", msgpack.packb(99))  # as a newer tierstore would have written it
    db.close()
    TierStore(tmp_path / "w2").close()  # a working directory of its own: no restore at open
    _try_checkpoint(tmp_path / "w2", persist, "from-older")
    db = plyvel.DB(str(persist))
    try:
        assert msgpack.unpackb(db.get(b"mschema")) == 99, "an older tierstore rewrote a newer checkpoint"
        assert db.get(b"es" + b"from-newer") is not None or any(
            k.endswith(b"from-newer") for k, _ in db.iterator(prefix=b"e")
        ), "an older tierstore deleted a newer checkpoint's entries"
    finally:
        db.close()


# -- wrong values ----------------------------------------------------------------------


def test_a_nan_clock_makes_set_store_a_record_tier2_calls_corrupt(tmp_path: Path) -> None:
    """An injected clock returning NaN: ``set(k, v, ttl=10)`` returns True, tier 1 then
    serves the value forever (``expires_at`` NaN compares false), while tier 2's decoder
    calls the record corrupt ("record expiry is NaN"): after a reopen the value is gone,
    and ``sweep()`` purges it as corrupt even while the store is open. The rule: tier 1
    holds exactly what tier 2 would decode, and what tier 2 could not give back is refused
    at ``set`` (a clock that is not a finite number: ``ValueError``/``TierStoreError``)."""
    store = TierStore(tmp_path / "w", clock=lambda: math.nan)
    try:
        stored = store.set("a", "value", ttl=10)
    except (ValueError, TypeError, TierStoreError):
        store.close()
        return  # refused: the contract holds
    hot = store.get("a")
    store.close()
    with TierStore(tmp_path / "w", clock=lambda: math.nan) as again:
        cold = again.get("a")
        assert again.stats()["corrupt_records"] == 0, "set() wrote a record that reads back as corrupt"
    assert stored and hot == cold, f"hot {hot!r} but cold {cold!r}"


def _plant_entry(path: Path, name: str, fields: list[Any]) -> None:
    TierStore(path).close()
    db = plyvel.DB(str(path))
    try:
        db.put(b"e" + b"s" + name.encode(), msgpack.packb(fields))
    finally:
        db.close()


def test_a_stored_version_beyond_the_version_range_blocks_every_versioned_write(tmp_path: Path) -> None:
    """A damaged envelope whose version is 2**64-1 (``set`` refuses anything >= 2**63) is
    accepted as a live entry: ``get_entry`` reports the impossible version and every
    ``set(version=n)`` with a legal ``n`` returns False for ever. The codec checks
    ``version < 0`` but not the upper bound: such a record is corrupt (counted, a miss)."""
    work = tmp_path / "w"
    assert b"s" + b"k" == b"sk"  # the entry key layout the planted record uses
    _plant_entry(work, "k", [1, 2**64 - 1, None, 0, "v", 1.0, None, 1, 0.0])
    with TierStore(work) as store:
        entry = store.get_entry("k")
        assert entry is None or entry.version < 2**63, f"an out-of-range version was served: {entry!r}"
        assert store.set("k", "new", version=2**63 - 1), "a legal versioned write is refused for ever"


def test_an_envelope_with_unknown_flag_bits_is_served_as_a_live_value(tmp_path: Path) -> None:
    """flags = 8 (a bit this version does not know, e.g. a newer writer's "compressed"): the CLI's
    reader classifies it as ``flagged`` (not live), yet ``get`` serves the value as live.
    The store and its reader must agree: a record with unknown flags is not a live value."""
    work = tmp_path / "w"
    _plant_entry(work, "k", [1, 0, None, 8, "payload-in-some-newer-encoding", 1.0, None, 1, 0.0])
    with TierStore(work) as store:
        assert store.get("k") is None, "a record with unknown flag bits was served as a live value"
        assert "k" not in store


# -- errors that never recover -----------------------------------------------------------


@pytest.fixture
def tiny_fs(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("1m")


def _fill_leaving(mount_point: Path, pages: int) -> Path:
    filler = mount_point / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - pages * 4096))
    return filler


def test_a_new_store_whose_creation_met_a_full_disk_opens_once_space_returns(tiny_fs: Path) -> None:
    """The very first open of a new store on a nearly full disk: LevelDB writes
    ``MANIFEST-000001`` (or a ``.dbtmp``) and fails before ``CURRENT`` exists, and
    ``StorageFull`` is raised (right). But the half-created directory stays, and once
    space returns every open says "corrupt: it holds LevelDB files but no CURRENT
    file; cannot restore it" (with 1 free page here): a store that never held a record
    is dead until someone deletes it by hand. StorageFull must recover when space
    returns: an unfinished creation is a new directory.
    Tried with 0 to 5 free pages, each on a fresh directory."""
    dead = []
    for free_pages in range(6):
        filler = _fill_leaving(tiny_fs, free_pages)
        work = tiny_fs / f"new{free_pages}"
        try:
            TierStore(work).close()
        except TierStoreError:
            pass  # StorageFull while full is right
        filler.unlink()
        try:
            with TierStore(work) as store:  # space is back
                assert store.set("a", 1)
        except TierStoreError as exc:
            dead.append(f"{free_pages} free pages: {exc}")
        shutil.rmtree(work, ignore_errors=True)
    assert not dead, "\n".join(dead)


def test_a_forked_child_can_open_the_directory_once_the_parent_has_closed_it(tmp_path: Path) -> None:
    """The registry copied into a forked child keeps the parent's directories for ever:
    after the parent closed (or exited), the child's ``TierStore(path)`` still raises
    ``StoreLocked`` "open in the parent process (pid N)", a statement that is false and
    stays false for the child's whole life (a daemon forked by a supervisor that then
    exits can never open its cache). The LevelDB lock is free: the open must succeed,
    or at least the entry must not outlive the parent's handle."""
    work = tmp_path / "w"
    store = TierStore(work)
    store.set("a", 1)
    go_read, go_write = os.pipe()
    out_read, out_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.read(go_read, 1)
            try:
                child = TierStore(work)
                answer = f"ok {child.get('a')!r}"
                child.close()
            except BaseException as exc:
                answer = f"{type(exc).__name__}: {exc}"
            os.write(out_write, answer.encode())
        finally:
            os._exit(0)
    store.close()
    os.write(go_write, b"x")
    answer = os.read(out_read, 4096).decode()
    os.waitpid(pid, 0)
    assert answer == "ok 1", answer


class _Repository:
    def __init__(self, base: int) -> None:
        self.base = base

    def lookup(self, x: int) -> int:
        return self.base + x


def test_cached_bound_methods_of_two_instances_read_each_others_entries(tmp_path: Path) -> None:
    """``store.cached(repo_a.lookup)`` and ``store.cached(repo_b.lookup)``: both keys are
    ``module.Class.lookup`` plus the arguments (``self`` is bound, so it is not among
    them), so the second instance returns the first's results (here 15 instead of 6).
    The closure case again, in the shape services use most (a repository
    object per tenant/database): a bound method needs ``name=``/``key=`` (TypeError at
    decoration) or a key that tells instances apart."""
    with TierStore(tmp_path / "w") as store:
        try:
            ten = store.cached(_Repository(10).lookup)
            one = store.cached(_Repository(1).lookup)
        except TypeError:
            return  # refused at decoration: the contract holds
        assert ten(5) == 15
        assert one(5) == 6, "one instance's cached method returned another instance's entry"


# -- damaged index meta records (the ``x`` namespace) -----------------------------------


def _store_with_index(path: Path) -> None:
    with TierStore(path) as store:
        store.index("ix").replace([("a", 1.0), ("b", 2.0), ("c", 3.0)], stamp="s1")


def _damage_index_meta(path: Path, **change: Any) -> None:
    db = plyvel.DB(str(path))
    try:
        (key, raw), *_ = list(db.iterator(prefix=b"x"))
        db.put(key, msgpack.packb({**msgpack.unpackb(raw), **change}))
    finally:
        db.close()


def test_an_index_meta_record_with_out_of_range_ints_raises_raw_errors(tmp_path: Path) -> None:
    """``IndexMeta.unpack`` checks that ``gen``/``count``/``next_gen``/``dirty``/``garbage``
    are ints, not that they are in range. A damaged record with gen=-1 makes ``page``,
    ``rank``, ``add`` and ``replace`` raise a raw ``OverflowError`` (for ever: ``replace``
    cannot rebuild it); count=-5 makes ``len(index)`` a raw ``ValueError``; count=2**64-1
    a raw ``OverflowError`` on ``len`` and ``add``; garbage=[-1] makes ``store.index(name)``
    itself raise ``OverflowError`` at every call. Errors from below: a typed
    error (CorruptRecord) naming the record, or a repair; never a raw error."""
    raw: list[str] = []
    cases: dict[str, dict[str, Any]] = {
        "gen=-1": {"gen": -1},
        "count=-5": {"count": -5},
        "count=2**64-1": {"count": 2**64 - 1},
        "dirty=2**64-1": {"dirty": 2**64 - 1},
        "next_gen=2**64-1": {"next_gen": 2**64 - 1},
        "garbage=[-1]": {"garbage": [-1]},
    }
    for number, (name, change) in enumerate(cases.items()):
        work = tmp_path / f"w{number}"
        _store_with_index(work)
        _damage_index_meta(work, **change)
        with TierStore(work) as store:
            calls = [
                ("index", lambda: store.index("ix")),
                ("len", lambda: len(store.index("ix"))),
                ("page", lambda: store.index("ix").page()),
                ("rank", lambda: store.index("ix").rank("b")),
                ("add", lambda: store.index("ix").add("d", 4.0)),
                ("mark_dirty", lambda: store.index("ix").mark_dirty()),
                ("replace", lambda: store.index("ix").replace([("z", 1.0)], stamp="s2")),
            ]
            for call_name, call in calls:
                try:
                    call()
                except TierStoreError:
                    pass
                except Exception as exc:
                    raw.append(f"{name}: {call_name} raised {type(exc).__name__}: {exc}")
    assert not raw, "\n".join(raw)


def test_an_index_meta_record_naming_its_live_generation_as_garbage_loses_the_members(tmp_path: Path) -> None:
    """Damaged meta records whose fields are each well-typed but contradict each other:
    the live generation listed in ``building`` or ``garbage`` (purged at open), a ``gen``
    with no members, or ``next_gen`` equal to ``gen`` (the next ``replace`` writes into
    the live generation, then purges it). Each time ``len(index)`` says 3 (or 1) while
    ``page()`` lists nothing, and ``rank`` finds nothing: the reads disagree for ever
    (a reopen does not repair it). The rule: members, order records and counts
    agree; a contradiction is repaired (or the index reported corrupt), not served."""
    disagreements: list[str] = []
    cases: dict[str, dict[str, Any]] = {
        "building=[gen]": {"building": [1]},
        "garbage=[gen]": {"garbage": [1]},
        "gen without members": {"gen": 7, "next_gen": 8},
        "next_gen=gen": {"next_gen": 1},
    }
    for number, (name, change) in enumerate(cases.items()):
        work = tmp_path / f"w{number}"
        _store_with_index(work)
        _damage_index_meta(work, **change)
        with TierStore(work) as store:
            index = store.index("ix")
            index.replace([("z", 1.0)], stamp="s2") if name == "next_gen=gen" else None
        with TierStore(work) as store:
            index = store.index("ix")
            try:
                listed = index.page(0, 100)
                counted = len(index)
            except TierStoreError:
                continue  # reported as damaged: acceptable
            if counted != len(listed):
                disagreements.append(f"{name}: len() = {counted} but page() = {listed!r}")
    assert not disagreements, "\n".join(disagreements)


@pytest.mark.parametrize(
    "damage",
    [b"\xc1garbage", msgpack.packb({"gen": -1}), msgpack.packb({"gen": 1, "next_gen": 1, "count": 3})],
    ids=["garbage", "out-of-range", "contradiction"],
)
def test_a_damaged_index_meta_record_is_rebuilt_from_the_members(tmp_path: Path, damage: bytes) -> None:
    """The members are the truth: a meta record that cannot be trusted is rebuilt from them,
    and the index then works again (reads, writes, replace, a refresher's rebuild)."""
    work = tmp_path / "w"
    _store_with_index(work)
    db = plyvel.DB(str(work))
    try:
        (key, _), *_ = list(db.iterator(prefix=b"x"))
        db.put(key, damage)
    finally:
        db.close()
    with TierStore(work) as store:
        index = store.index("ix")
        assert index.page() == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
        assert len(index) == 3 and index.rank("c") == 2
        assert index.stamp is None  # forgotten: a keep_fresh refresher rebuilds it
        index.add("d", 4.0)
        index.replace([("z", 9.0)], stamp="s2")
        assert index.page() == [("z", 9.0)] and len(index) == 1
    with TierStore(work) as store:
        assert store.index("ix").page() == [("z", 9.0)] and store.index("ix").stamp == "s2"


def test_a_path_holding_someone_elses_files_is_never_restored_over(tmp_path: Path) -> None:
    """``path`` names a directory of other files (a home directory, say) while a checkpoint
    exists: it must be refused, not moved aside and replaced by the checkpoint."""
    persist = tmp_path / "p"
    make_checkpoint(tmp_path / "w", persist)
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(NotAStore, match="not a tierstore"):
        TierStore(home, persist_path=persist)
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]
    assert not list(tmp_path.glob("home.corrupt-*"))


def test_a_foreign_leveldb_as_path_is_never_restored_over(tmp_path: Path) -> None:
    persist = tmp_path / "p"
    make_checkpoint(tmp_path / "w", persist)
    foreign = tmp_path / "foreign"
    db = plyvel.DB(str(foreign), create_if_missing=True)
    db.put(b"app-row-1", b"precious")
    db.close()
    with pytest.raises(NotAStore, match="not a tierstore"):
        TierStore(foreign, persist_path=persist)
    db = plyvel.DB(str(foreign))
    try:
        assert list(db.iterator()) == [(b"app-row-1", b"precious")]
    finally:
        db.close()


def test_a_store_that_lost_only_its_schema_record_is_restored(tmp_path: Path) -> None:
    """Tierstore's own meta records beside a missing schema record: a damaged store, restored."""
    work, persist = tmp_path / "w", tmp_path / "p"
    with TierStore(work, persist_path=persist, checkpoint_interval=None) as store:
        store.set("k", 1)
    db = plyvel.DB(str(work))
    db.delete(b"mschema")
    db.close()
    with TierStore(work, persist_path=persist) as store:
        assert store.stats()["restored_from_checkpoint"] == 1
        assert store.get("k") == 1

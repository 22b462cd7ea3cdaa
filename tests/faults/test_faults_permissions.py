"""Directories the process may not write, and the modes of directories it creates.

The tests run as root locally and in CI, and root ignores permission bits: the
checks run in a forked child that drops to an unprivileged user first (or in
this process when it is not root).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tierstore import PermissionDenied, TierStore

NOBODY = 65534


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp directory the unprivileged user can reach (pytest's own sits under root-only ones)."""
    path = Path(tempfile.mkdtemp(prefix="tierstore-perm-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_unprivileged(action: Callable[[], str]) -> str:
    """Run ``action`` as an unprivileged user; its result, or the error it raised as "Type: message"."""

    def attempt() -> str:
        try:
            return action()
        except BaseException as exc:
            return f"{type(exc).__name__}: {exc}"

    if os.geteuid() != 0:
        return attempt()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, json.dumps(attempt()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + 30
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            pytest.fail("the unprivileged child hung")
        time.sleep(0.01)
    with os.fdopen(read_end) as pipe:
        result: str = json.loads(pipe.read())
    return result


def _open(path: Path, **settings: object) -> Callable[[], str]:
    def action() -> str:
        with TierStore(path, **settings) as store:  # type: ignore[arg-type]
            store.set("k", 1)
            return "opened"

    return action


def _private_root(tmp_path: Path) -> Path:
    """A directory only root may enter."""
    root = tmp_path / "root-only"
    root.mkdir(mode=0o700)
    return root


def test_a_directory_the_process_cannot_write_is_permission_denied(open_tmp: Path) -> None:
    tmp_path = open_tmp
    store = tmp_path / "store"
    with TierStore(store) as made:
        made.set("k", 1)
    os.chmod(store, 0o555)  # readable, not writable: LevelDB cannot create its LOCK file
    outcome = as_unprivileged(_open(store))
    assert outcome.startswith(PermissionDenied.__name__), outcome
    assert str(store) in outcome and "permission denied" in outcome.lower()
    os.chmod(store, 0o700)
    with TierStore(store) as reopened:  # nothing was changed by the refused open
        assert reopened.get("k") == 1


def test_creating_a_store_where_the_process_may_not_is_permission_denied(open_tmp: Path) -> None:
    tmp_path = open_tmp
    target = _private_root(tmp_path) / "a" / "store"
    outcome = as_unprivileged(_open(target))
    assert outcome.startswith(PermissionDenied.__name__), outcome
    assert str(target) in outcome
    assert not (tmp_path / "root-only" / "a").exists()


def test_a_checkpoint_directory_the_process_cannot_write_is_permission_denied(open_tmp: Path) -> None:
    tmp_path = open_tmp
    persist = _private_root(tmp_path) / "persist"
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    os.chmod(work, 0o777)

    def action() -> str:
        with TierStore(work / "store", persist_path=persist, checkpoint_interval=None) as store:
            store.set("k", 1)
            try:
                store.checkpoint()
            except PermissionDenied as exc:
                assert store.get("k") == 1  # the store itself carries on
                return f"PermissionDenied: {exc}"
            return "checkpointed"

    outcome = as_unprivileged(action)
    assert outcome.startswith(PermissionDenied.__name__), outcome
    assert str(persist) in outcome


def test_directories_created_for_a_store_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "a" / "b" / "store"
        with TierStore(path) as store:
            store.set("k", 1)
    finally:
        os.umask(old)
    for made in (tmp_path / "a", tmp_path / "a" / "b", path):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made

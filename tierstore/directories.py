"""Replacing a store's directory: setting a damaged one aside, putting a restored copy in its place.

A directory is renamed aside and a copy renamed in, except a mount point (a disk
of its own at ``path`` or ``persist_path``), which keeps its place: its files
move into a subdirectory named ``.tierstore-...`` and the copy's files move in.
Every check of what a directory holds passes over those entries and over a
filesystem's ``lost+found``. Nothing here is ever deleted but LevelDB's own
leftovers of a creation it never finished.
"""

from __future__ import annotations

import os
import shutil
import time

__all__ = ["OWN_ENTRY", "foreign_entries", "set_aside", "staging_for", "install"]

#: The prefix of tierstore's own entries inside a directory it cannot rename (a mount point): a
#: damaged directory's files set aside, a restore being built. LevelDB ignores them, and so does
#: every check of what a directory holds (with ``lost+found``, a filesystem's own).
OWN_ENTRY = ".tierstore-"
NOT_OURS = frozenset({"lost+found"})


def foreign_entries(path: str) -> list[str]:
    """The names in ``path`` that are not tierstore's own entries nor a filesystem's."""
    return [name for name in os.listdir(path) if not name.startswith(OWN_ENTRY) and name not in NOT_OURS]


def set_aside(path: str) -> str:
    """Rename a damaged directory to ``<path>.corrupt-<time>-<pid>[-n]`` (never over another) and
    return the new name; a mount point, which cannot be renamed, has its files moved into
    ``<path>/.tierstore-corrupt-...`` instead. Raises ``OSError`` as ``os.rename`` does."""
    stamp = f"corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    if os.path.ismount(path):
        name = _unused(os.path.join(path, OWN_ENTRY + stamp))
        os.mkdir(name, 0o700)
        _move_entries(path, name)
        return name
    name = _unused(f"{path.rstrip(os.sep)}.{stamp}")
    os.rename(path, name)
    return name


def _unused(base: str) -> str:
    name, number = base, 0
    while os.path.lexists(name):  # a second damage within the same second
        number += 1
        name = f"{base}-{number}"
    return name


def _move_entries(source: str, target: str, *, last: str | None = None) -> None:
    """Move the foreign entries of ``source`` into ``target`` (one filesystem), ``last`` last."""
    for name in sorted(foreign_entries(source), key=lambda name: name == last):
        os.rename(os.path.join(source, name), os.path.join(target, name))


def _passes_over(path: str) -> bool:
    """Whether the directory ``path`` holds entries the checks pass over (``lost+found``, tierstore's
    own): they are not LevelDB's leftovers, so it is filled in place, as a mount point, never removed."""
    return os.path.isdir(path) and len(os.listdir(path)) != len(foreign_entries(path))


def staging_for(real: str) -> str:
    """Where a restore of the directory ``real`` builds its copy: beside it, or inside a mount point."""
    return os.path.join(real, OWN_ENTRY + "restoring") if os.path.ismount(real) else real + ".restoring"


def install(staging: str, real: str, *, aside: bool) -> str | None:
    """Put the copy built in ``staging`` in place of the directory ``real``; returns where a damaged
    ``real`` was set aside (``aside``), else removes what it held (LevelDB's leftovers).

    A mount point keeps its place: the copy's files move into it, ``CURRENT`` last, so a kill
    half way leaves a directory without ``CURRENT`` (damaged: set aside and restored again).
    So does a plain directory holding what every check passes over, which removing it would delete.
    """
    moved_to = set_aside(real) if aside and os.path.lexists(real) else None
    if not os.path.ismount(real) and not _passes_over(real):
        if moved_to is None and os.path.lexists(real):
            shutil.rmtree(real)
        os.rename(staging, real)
        return moved_to
    for name in foreign_entries(real):
        entry = os.path.join(real, name)
        shutil.rmtree(entry) if os.path.isdir(entry) and not os.path.islink(entry) else os.unlink(entry)
    _move_entries(staging, real, last="CURRENT")
    os.rmdir(staging)
    return moved_to

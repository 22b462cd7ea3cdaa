"""Adversarial suite: settings that used to be accepted and fail later are refused at construction.

Every refusal is a ``TypeError``/``ValueError`` naming the setting, and leaves
nothing behind: no directory created, no lock held.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tierstore import TierStore

HUGE = 2**70


@pytest.mark.parametrize(
    "setting",
    ["memory_items", "memory_bytes", "bloom_capacity", "disk_capacity_bytes", "max_value_bytes", "disk_cache_bytes"],
)
def test_an_int_setting_too_large_for_c_is_refused_naming_the_bound(store_path: str, setting: str) -> None:
    with pytest.raises(ValueError, match=rf"{setting} must be at most {sys.maxsize}"):
        TierStore(store_path, **{setting: HUGE})
    # past 4,300 digits str() of the int raises a ValueError of its own: the message names its size
    with pytest.raises(ValueError, match=rf"{setting} must be at most {sys.maxsize}.*int of 16610 bits"):
        TierStore(store_path, **{setting: 10**5000})
    with pytest.raises(ValueError, match=rf"{setting} must be >= .*negative int of 16610 bits"):
        TierStore(store_path, **{setting: -(10**5000)})
    assert not Path(store_path).exists()


def test_an_existence_filter_too_large_for_memory_is_refused(store_path: str) -> None:
    with pytest.raises(ValueError, match=r"bloom_capacity .* needs a .*-byte filter; the bound is"):
        TierStore(store_path, guard=True, bloom_capacity=2**40)
    assert not Path(store_path).exists()


@pytest.mark.parametrize("setting", ["path", "persist_path"])
def test_an_empty_path_is_refused(tmp_path: Path, setting: str) -> None:
    settings: dict[str, Any] = {"path": str(tmp_path / "store"), setting: ""}
    with pytest.raises(ValueError, match=f"{setting} must not be empty"):
        TierStore(**settings)


@pytest.mark.parametrize("setting", ["path", "persist_path"])
def test_a_path_naming_a_regular_file_is_refused(tmp_path: Path, setting: str) -> None:
    afile = tmp_path / "a-file"
    afile.write_bytes(b"not a directory")
    settings: dict[str, Any] = {"path": str(tmp_path / "store"), setting: afile}
    with pytest.raises(ValueError, match=f"{setting} .*a-file.* is not a directory"):
        TierStore(**settings)
    assert afile.read_bytes() == b"not a directory"
    assert not (tmp_path / "store").exists()


def test_pathlib_paths_work_for_both_directories_through_a_restore(tmp_path: Path) -> None:
    path, persist = tmp_path / "store", tmp_path / "persist"
    with TierStore(path, persist_path=persist, checkpoint_interval=None) as store:
        store.set("a", 1)
    for child in path.iterdir():
        child.unlink()
    path.rmdir()  # the working directory is lost: the next open restores from the checkpoint
    with TierStore(path, persist_path=persist) as store:
        assert store.get("a") == 1

"""reader.py and summary.py pieces that the CLI tests reach only by chance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tierstore import summary


def test_disk_usage_skips_a_file_deleted_between_listing_and_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "000001.ldb").write_bytes(b"x" * 10)
    (tmp_path / "000002.ldb").write_bytes(b"y" * 7)
    real_scandir = os.scandir

    class Vanishing:
        """A directory entry whose file compaction removed after the listing."""

        def __init__(self, entry: Any) -> None:
            self._entry = entry

        def is_file(self, follow_symlinks: bool = True) -> bool:
            return True

        def stat(self, follow_symlinks: bool = True) -> os.stat_result:
            raise FileNotFoundError(self._entry.path)

    class Listing:
        def __init__(self, path: str) -> None:
            self._scan = real_scandir(path)

        def __enter__(self) -> list[Any]:
            entries = sorted(self._scan, key=lambda e: e.name)
            return [Vanishing(entries[0]), *entries[1:]]

        def __exit__(self, *exc: object) -> None:
            self._scan.close()

    monkeypatch.setattr(summary.os, "scandir", Listing)
    assert summary.disk_usage(str(tmp_path)) == {"bytes": 7, "files": 1}

"""The LevelDB binding is chosen in one place (``tierstore._plyvel``) and is the one installed."""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tierstore import _plyvel

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = {"plyvel": "plyvel", "plyvel_next": "plyvel-next"}


def installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_the_binding_is_the_one_this_python_depends_on_when_installed() -> None:
    preferred = "plyvel_next" if sys.version_info >= (3, 13) else "plyvel"
    assert _plyvel.BINDINGS[0] == preferred
    expected = next(name for name in _plyvel.BINDINGS if installed(DISTRIBUTIONS[name]))
    assert _plyvel.plyvel.__name__ == expected
    assert _plyvel.plyvel.__version__ == metadata.version(DISTRIBUTIONS[expected])


def test_the_binding_has_what_tierstore_uses() -> None:
    for name in ("DB", "Error", "IOError", "CorruptionError", "__version__", "__leveldb_version__"):
        assert hasattr(_plyvel.plyvel, name), name
    assert issubclass(_plyvel.plyvel.CorruptionError, _plyvel.plyvel.Error)
    assert issubclass(_plyvel.plyvel.IOError, _plyvel.plyvel.Error)


def test_a_missing_binding_is_passed_over_for_the_next() -> None:
    assert _plyvel.import_binding(("tierstore_no_such_binding", "json")).__name__ == "json"


def test_no_binding_at_all_says_what_to_install() -> None:
    with pytest.raises(ModuleNotFoundError, match="plyvel-next"):
        _plyvel.import_binding(("tierstore_no_such_binding", "tierstore_nor_this_one"))


def test_a_binding_that_fails_to_load_raises_its_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tierstore_broken_binding.py").write_text("import tierstore_missing_library\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        _plyvel.import_binding(("tierstore_broken_binding", "json"))
    assert caught.value.name == "tierstore_missing_library"


def test_nothing_else_imports_a_binding() -> None:
    offenders = []
    for folder in ("tierstore", "bench", "tests", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "tierstore" / "_plyvel.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                if {n.partition(".")[0] for n in names} & set(DISTRIBUTIONS):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []

"""The module map (README "Layout"): data flows one way, from the store to its parts."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tierstore"
FACADE = {"store", "__init__", "__main__", "aio"}  # aio: the asyncio facade over the store
LEAVES = {"codec", "clock", "errors", "bloom"}  # import nothing of the package but each other


def package_imports(module: str) -> set[str]:
    """The tierstore modules that ``module`` imports."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.update([node.module] if node.module else [alias.name for alias in node.names])
            elif node.module and node.module.startswith("tierstore"):
                found.add(node.module.partition(".")[2] or "__init__")
        elif isinstance(node, ast.Import):
            found.update(a.name.partition(".")[2] for a in node.names if a.name.startswith("tierstore."))
    return found


def modules() -> list[str]:
    return sorted(path.stem for path in PACKAGE.glob("*.py"))


def test_no_part_imports_the_store() -> None:
    offenders = {m: package_imports(m) for m in modules() if m not in FACADE and "store" in package_imports(m)}
    assert offenders == {}


def test_leaf_modules_import_only_each_other() -> None:
    for module in LEAVES:
        assert package_imports(module) <= LEAVES, module


PICKLING = {"pickle", "cPickle", "_pickle", "dill", "shelve", "marshal", "copyreg"}
PICKLE_ALLOWED = PACKAGE / "integrations" / "codecs.py"  # the opt-in serializer, signed with a secret


def imported_names(tree: ast.AST) -> set[str]:
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    return names


def test_no_pickle_anywhere() -> None:
    """The store never pickles; only the Django backend's codecs import pickle, for its signed serializer
    (the tests and the bench do not either: a payload an attacker plants is written as bytes)."""
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        found = PICKLING & imported_names(ast.parse(path.read_text()))
        if path == PICKLE_ALLOWED:
            assert found == {"pickle"}, path.name
        else:
            assert not found, path.relative_to(ROOT)


def test_the_django_backend_unpickles_only_after_the_hmac_check() -> None:
    """Every unpickling call of the Django backend's codecs is preceded, in its function, by the HMAC check.

    A source-level check: ``pickle.loads`` is the only way in (no ``load``, no
    ``Unpickler``, no ``from pickle import``), each call comes after a guard that
    returns or raises when ``verify`` fails, and ``verify`` ends in ``hmac.compare_digest``.
    """
    tree = ast.parse(PICKLE_ALLOWED.read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "pickle"]
    uses = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _is_name(n.value, "pickle")}
    assert uses <= {"dumps", "loads", "HIGHEST_PROTOCOL", "PickleError"}, uses
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    verify = [f for f in functions if f.name == "verify" and _calls(f, "hmac", "compare_digest")]
    assert verify, "verify() must compare MACs with hmac.compare_digest"
    loaders = [f for f in functions if _calls(f, "pickle", "loads")]
    assert loaders, "the backend lost its unpickling call"
    for function in loaders:
        loads_line = min(n.lineno for n in ast.walk(function) if _is_call(n, "pickle", "loads"))
        guards = [
            node
            for node in function.body
            if isinstance(node, ast.If)
            and node.lineno < loads_line
            and isinstance(node.test, ast.UnaryOp)
            and isinstance(node.test.op, ast.Not)
            and any(_is_call(c, "self", "verify") for c in ast.walk(node.test))
            and isinstance(node.body[-1], ast.Raise | ast.Return)
        ]
        assert guards, f"{function.name}() unpickles without checking verify() first"


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _is_call(node: ast.AST, owner: str, attr: str) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == attr
        and _is_name(node.func.value, owner)
    )


def _calls(function: ast.FunctionDef, owner: str, attr: str) -> bool:
    return any(_is_call(node, owner, attr) for node in ast.walk(function))


def test_readme_layout_names_every_module() -> None:
    """The README's module map lists each module of the package and its subpackages, and no module that is gone."""
    section = (ROOT / "README.md").read_text().partition("## Layout")[2].partition("\n## ")[0]
    named = set(re.findall(r"`(?:\w+/)?(\w+)\.py`", section))
    every = {path.stem for path in PACKAGE.rglob("*.py")}
    assert named == every - {"__init__", "__main__"}


def test_the_store_never_imports_its_integrations() -> None:
    """``integrations/`` sits above the store: no module of the package proper imports it."""
    offenders = {m for m in modules() if any(i.startswith("integrations") for i in package_imports(m))}
    assert offenders == set()


# A format module is shared by readers that must not pull in the machinery that writes it.
FORMATS = {
    "index_codec": {"ranking", "index_scan", "index_repair", "index_refresher"},
    "checkpoint_record": {"checkpoint", "checkpoint_copy", "restore"},
    "cli_format": {"cli", "cli_commands", "cli_json"},
    "cli_json": {"cli", "cli_commands"},
}


def test_format_modules_do_not_import_their_machinery() -> None:
    for module, machinery in FORMATS.items():
        assert not package_imports(module) & machinery, module


def test_ranking_still_exports_what_the_store_imports_from_it() -> None:
    from tierstore import ranking

    assert {"SortedIndex", "IndexRefresher", "DEFAULT_REFRESH_INTERVAL", "Pairs"} <= set(vars(ranking))


def test_architecture_doc_names_only_modules_that_exist() -> None:
    """docs/architecture.md (linked from the README) names real modules and namespaces."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
    named = set(re.findall(r"`(\w+)\.py`", doc))
    assert named and named <= set(modules())
    from tierstore import keyspace

    for byte in re.findall(r"^\| `(\w)`", doc, re.M):
        assert byte.encode() in keyspace.NAMESPACES, byte


def test_the_project_carries_its_own_design() -> None:
    """No file of the project refers to a design document outside it."""
    outside = "DESIGN" + ".md"
    files = [ROOT / "README.md", ROOT / "setup.cfg", ROOT / "pyproject.toml"]
    for folder in ("tierstore", "bench", "tests", "docs", "scripts"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ".txt", ".cfg", ".toml"}]
    assert [str(p.relative_to(ROOT)) for p in files if outside in p.read_text()] == []

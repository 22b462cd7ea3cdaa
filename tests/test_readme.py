"""The README tells the truth: its example runs as written, and its Options table is the constructor's signature."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

from tierstore import TierStore

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(tmp_path: Path) -> None:
    text = README.read_text()
    match = re.search(r"## Example\n\n```python\n(.*?)```", text, re.S)
    assert match is not None, "the README lost its example"
    code = match.group(1).replace("/tmp/tierstore-demo", str(tmp_path / "demo"))
    for run in (1, 2):  # the second run reopens the same directory
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"{{'name': 'Ada', 'langs': ['en', 'fr']}} {{'name': 'Grace'}} {run} [('ada', 42.0)]"
        )


def readme_default(text: str) -> object:
    """A default as the Options table writes it: a Python literal, ``N MiB``, or a dotted name."""
    if text.endswith(" MiB"):
        return int(text.removesuffix(" MiB")) * 1024 * 1024
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        module, _, name = text.rpartition(".")
        return getattr(importlib.import_module(module), name)


def test_readme_options_table_lists_every_setting_with_its_default() -> None:
    """Each keyword of ``TierStore.__init__`` has a row in "Options", with the default the signature has."""
    section = README.read_text().partition("\n## Options\n")[2].partition("\n## ")[0]
    documented: dict[str, str] = {}
    for row in re.findall(r"^\| (`.*?) \| (`.*?`) \|", section, re.M):
        names, defaults = (re.findall(r"`([^`]+)`", cell) for cell in row)
        documented.update(zip(names, defaults, strict=True))
    parameters = dict(inspect.signature(TierStore.__init__).parameters)
    del parameters["self"]
    assert set(documented) == set(parameters)
    for name, parameter in parameters.items():
        default = readme_default(documented[name])
        assert default == parameter.default and type(default) is type(parameter.default), (name, documented[name])

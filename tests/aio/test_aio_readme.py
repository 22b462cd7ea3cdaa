"""The README's asyncio example runs as written (twice: the second run reopens the directory)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent.parent / "README.md"


def test_readme_asyncio_example_runs(tmp_path: Path) -> None:
    text = README.read_text()
    match = re.search(r"## asyncio\n\n.*?```python\n(.*?)```", text, re.S)
    assert match is not None, "the README lost its asyncio example"
    code = match.group(1).replace("/tmp/tierstore-aio-demo", str(tmp_path / "demo"))
    printed = re.search(r"It prints `(.*?)`", text[match.end() :])
    assert printed is not None
    for _ in (1, 2):
        done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == printed.group(1)

"""The README's example runs as written (in a temporary directory) and says what it claims."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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

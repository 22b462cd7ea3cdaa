"""Every test here runs with ResourceWarning, RuntimeWarning ("coroutine ... was never awaited")
and unraisable exceptions as errors; ``support.run`` fails a test whose loop's exception handler was called."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/aio/" in str(item.path):
            item.add_marker(pytest.mark.filterwarnings("error::ResourceWarning"))
            item.add_marker(pytest.mark.filterwarnings("error::RuntimeWarning"))
            item.add_marker(pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"))

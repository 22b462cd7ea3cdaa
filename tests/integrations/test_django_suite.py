"""Django's own cache tests (its source's ``BaseCacheTests`` and ``CacheMiddlewareTest``) against TierStoreCache.

``scripts/django_cache_suite.py`` fetches Django's source distribution with pip
(once per version, kept in the temporary directory), writes the test module
that configures ``TierStoreCache`` in pickle mode, and runs it with Django's
``runtests.py`` in a subprocess. A refused download fails this test: it never
skips.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "django_cache_suite.py"


def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("django_cache_suite", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_djangos_cache_tests_pass_against_tierstorecache() -> None:
    counts = harness().run("tierstore")
    report = f"{counts}\n{counts.output[-8000:]}"
    assert counts.failed == [] and counts.errors == [], report
    skipped = set(re.findall(r"^(test_\w+) \(.*\) \.\.\. skipped", counts.output, re.MULTILINE))
    assert skipped == {"test_cull", "test_zero_cull"}, report  # MAX_ENTRIES/CULL_FREQUENCY: not supported
    assert counts.skipped == 2, report
    # unittest names a test "test_x (module.Class.test_x)" from Python 3.11, "test_x (module.Class)" before
    found = re.findall(r"^(test_\w+) \(cache\.\w+\.BackendCacheMiddlewareTest(?:\.\1)?\)", counts.output, re.MULTILINE)
    middleware = set(found)
    assert {"test_view_decorator", "test_middleware", "test_cache_page_timeout"} <= middleware, report
    assert counts.ran >= 70, report  # Django 5.2: 54 of BaseCacheTests, 16 of CacheMiddlewareTest

"""Django's own cache tests against a cache backend: tierstore's ``TierStoreCache`` or diskcache's ``DjangoCache``.

``python scripts/django_cache_suite.py tierstore`` (or ``diskcache``) fetches the
source distribution of the installed Django with pip (once: it is kept in a
temporary directory named by the version), writes a small test module beside
Django's ``tests/cache/tests.py`` that mixes Django's ``BaseCacheTests`` into a
test class configured for the backend, plus a subclass of its
``CacheMiddlewareTest`` (``cache_page`` and the cache middleware) on the same
backend, runs them with Django's ``tests/runtests.py`` and prints the counts.
Nothing of Django is copied into this project: its tests are imported from the
download.

For ``TierStoreCache`` (``serializer="pickle"``, the secret being the test
settings' ``SECRET_KEY``) the two culling tests are skipped: ``MAX_ENTRIES``
and ``CULL_FREQUENCY`` are not supported. diskcache runs with nothing skipped.
``tests/integrations/test_django_suite.py`` runs the tierstore case in the test run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BACKENDS = {
    "tierstore": ("tierstore.integrations.django.TierStoreCache", {"serializer": "pickle"}),
    "diskcache": ("diskcache.DjangoCache", {}),
}
NOT_SUPPORTED = "MAX_ENTRIES/CULL_FREQUENCY are not supported by TierStoreCache (tier 2 is bounded in bytes)"
SKIPS = {"tierstore": {"test_cull": NOT_SUPPORTED, "test_zero_cull": NOT_SUPPORTED}, "diskcache": {}}

MODULE = '''"""Written by tierstore's scripts/django_cache_suite.py: Django's cache tests for {backend}."""

import os
import unittest

from django.test import TestCase, override_settings

from . import tests as django_cache_tests

LOCATION = os.environ["TIERSTORE_SUITE_LOCATION"]
BACKEND = {backend!r}
OPTIONS = {options!r}
SKIP = {skips!r}


def _skipping(cls):
    for name, reason in SKIP.items():
        setattr(cls, name, unittest.skip(reason)(getattr(cls, name)))
    return cls


@_skipping
@override_settings(
    CACHES=django_cache_tests.caches_setting_for_tests(
        BACKEND=BACKEND, LOCATION=os.path.join(LOCATION, "base"), OPTIONS=OPTIONS
    )
)
class BackendCacheTests(django_cache_tests.BaseCacheTests, TestCase):
    pass


@override_settings(
    CACHES={{
        "default": {{"BACKEND": BACKEND, "LOCATION": os.path.join(LOCATION, "default"), "OPTIONS": OPTIONS}},
        "other": {{
            "BACKEND": BACKEND,
            "LOCATION": os.path.join(LOCATION, "other"),
            "TIMEOUT": "1",
            "OPTIONS": OPTIONS,
        }},
    }}
)
class BackendCacheMiddlewareTest(django_cache_tests.CacheMiddlewareTest):
    pass
'''


@dataclass
class Counts:
    """A run's outcome by test (a test with failing subtests counts once, as failed)."""

    ran: int  # run or skipped
    failed: list[str]
    errors: list[str]
    skipped: int
    seconds: float
    output: str

    @property
    def passed(self) -> int:
        return self.ran - len(self.failed) - len(self.errors) - self.skipped

    def __str__(self) -> str:
        text = (
            f"ran {self.ran}: {self.passed} passed, {len(self.failed)} failed, {len(self.errors)} errors, "
            f"{self.skipped} skipped in {self.seconds:.1f}s"
        )
        for kind, names in (("failed", self.failed), ("errors", self.errors)):
            if names:
                text += f"\n  {kind}: {', '.join(names)}"
        return text


def django_version() -> str:
    import django

    return django.get_version()


def fetch_django_tests(version: str | None = None) -> Path:
    """The ``tests`` directory of Django's source distribution, downloaded with pip once per version.

    Raises ``RuntimeError`` (with pip's output) when the download fails: a caller never
    mistakes a refused download for a passing suite.
    """
    version = version or django_version()
    home = Path(tempfile.gettempdir()) / f"tierstore-django-tests-{version}"
    tests = home / f"django-{version}" / "tests"
    if (tests / "runtests.py").exists() and (tests / "cache" / "tests.py").exists():
        return tests
    staging = Path(tempfile.mkdtemp(prefix=f"tierstore-django-tests-{version}-"))
    try:
        command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
        command += [f"django=={version}", "-d", str(staging / "download")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        archives = list((staging / "download").glob("*.tar.gz")) if done.returncode == 0 else []
        if not archives:
            raise RuntimeError(
                f"could not download Django {version}'s source distribution with pip "
                f"(exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        with tarfile.open(archives[0]) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith(f"django-{version}/tests/")]
            if hasattr(tarfile, "data_filter"):
                archive.extractall(staging / "unpacked", members=members, filter="data")
            else:  # pragma: no cover - Pythons before the extraction filters
                archive.extractall(staging / "unpacked", members=members)
        try:
            (staging / "unpacked").rename(home)
        except OSError:
            if not (tests / "runtests.py").exists():  # another run got there first, or a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tests


def write_module(tests: Path, backend: str) -> str:
    """Write the test module for ``backend`` into Django's ``cache`` test package; its test label."""
    path, options = BACKENDS[backend]
    name = f"tests_tierstore_{backend}"
    text = MODULE.format(backend=path, options=options, skips=SKIPS[backend])
    (tests / "cache" / f"{name}.py").write_text(text)
    return f"cache.{name}"


def run(backend: str, *, timeout: float = 900) -> Counts:
    """Run Django's cache tests against ``backend`` in a subprocess and count the outcome."""
    tests = fetch_django_tests()
    label = write_module(tests, backend)
    location = tempfile.mkdtemp(prefix=f"tierstore-django-suite-{backend}-")
    env = dict(os.environ, TIERSTORE_SUITE_LOCATION=location, PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "runtests.py", "--settings=test_sqlite", "--parallel=1", "-v", "2", label]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=tests, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        shutil.rmtree(location, ignore_errors=True)
    return parse(done.stdout + done.stderr, time.monotonic() - started)


def parse(output: str, seconds: float) -> Counts:
    """The outcome of a unittest run: ``Ran N tests``, the ``FAIL:``/``ERROR:`` reports, ``OK``/``FAILED (...)``.

    The tests run or skipped are Django's ``Found N test(s)``: from Python 3.12 unittest's
    ``Ran N`` leaves out the tests a skip decorator skips (3.11 and before count them).
    """
    ran = re.search(r"^Ran (\d+) tests? in", output, re.MULTILINE)
    found = re.search(r"^Found (\d+) test\(s\)\.", output, re.MULTILINE)
    summary = re.search(r"^(OK|FAILED)\b(?: \((.*)\))?\s*$", output[ran.end() :] if ran else "", re.MULTILINE)
    if ran is None or summary is None:
        raise RuntimeError(f"Django's test runner printed no summary:\n{output[-4000:]}")
    counts = dict.fromkeys(("failures", "errors", "skipped", "expected failures", "unexpected successes"), 0)
    for part in (summary.group(2) or "").split(","):
        name, _, number = part.strip().partition("=")
        if number:
            counts[name] = int(number)
    reported: dict[str, set[str]] = {"FAIL": set(), "ERROR": set()}
    for kind, name in re.findall(r"^(FAIL|ERROR): (\w+) \(", output, re.MULTILINE):
        reported[kind].add(name)
    if counts["unexpected successes"]:
        reported["FAIL"].add(f"{counts['unexpected successes']} unexpected successes")
    if summary.group(1) == "FAILED" and not reported["FAIL"] and not reported["ERROR"]:
        reported["ERROR"].add("(the runner failed without naming a test)")
    return Counts(
        ran=int((found or ran).group(1)),
        failed=sorted(reported["FAIL"]),
        errors=sorted(reported["ERROR"] - reported["FAIL"]),
        skipped=counts["skipped"] + counts["expected failures"],
        seconds=seconds,
        output=output,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("backends", nargs="*", choices=sorted(BACKENDS), default=sorted(BACKENDS))
    parser.add_argument("--show", action="store_true", help="print the runner's output too")
    args = parser.parse_args()
    status = 0
    for backend in args.backends:
        counts = run(backend)
        if args.show:
            print(counts.output)
        print(f"{backend}: {counts}")
        status |= bool(counts.failed or counts.errors)
    return status


if __name__ == "__main__":
    sys.exit(main())

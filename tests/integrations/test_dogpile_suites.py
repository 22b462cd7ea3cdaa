"""dogpile.cache's own backend, serializer and mutex suites, run against the "tierstore" backend."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from dogpile.testing.fixtures import _GenericBackendTestSuite, _GenericMutexTestSuite, _GenericSerializerTestSuite

from tierstore.integrations.registry import close_all

# One directory for the module: every backend the suites build names it and so shares one store.
DIRECTORY = tempfile.mkdtemp(prefix="tierstore-dogpile-")
ARGUMENTS = {"path": DIRECTORY, "lock_timeout": 10.0, "checkpoint_interval": None}


@pytest.fixture(scope="module", autouse=True)
def _directory() -> Iterator[None]:
    yield
    close_all()  # the suites never close their backends; holders reopen on their next use
    shutil.rmtree(DIRECTORY, ignore_errors=True)


class TestTierStoreBackend(_GenericBackendTestSuite):  # type: ignore[misc]
    backend = "tierstore"
    config_args: ClassVar[dict[str, Any]] = {"arguments": ARGUMENTS}


class TestTierStoreSerializer(_GenericSerializerTestSuite, _GenericBackendTestSuite):  # type: ignore[misc]
    backend = "tierstore"
    config_args: ClassVar[dict[str, Any]] = {"arguments": ARGUMENTS}


class TestTierStoreMutex(_GenericMutexTestSuite):  # type: ignore[misc]
    backend = "tierstore"
    config_args: ClassVar[dict[str, Any]] = {"arguments": ARGUMENTS}

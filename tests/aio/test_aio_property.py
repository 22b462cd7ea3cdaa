"""A Hypothesis test: loads, cancellations, invalidations, failures and negative results, interleaved, against a model.

Every step runs on one loop and is followed by ``settle()``, so the interleaving
is the one Hypothesis chose, not one the scheduler happened to pick. The model
(``load_model``) says, after each step, which callers are still waiting, what
each finished one got, which loads were cancelled, how many times the loader ran
and what the store holds. ``tests/shared/test_shared_aio_model`` runs the same
steps against a store in shared mode.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.aio.load_model import OPS, Driver
from tests.aio.support import run, settle
from tierstore import TierStore
from tierstore.aio import AsyncTierStore


@given(st.lists(OPS, max_size=30))
def test_interleaved_loads_cancellations_and_invalidations_follow_the_model(ops: list[tuple[str, Any]]) -> None:
    run(check, ops)


async def check(ops: list[tuple[str, Any]]) -> None:
    s = AsyncTierStore(TierStore(None, checkpoint_interval=None))
    driver = Driver(s)
    try:
        for op, arg in ops:
            if await driver.apply(op, arg):
                await settle()
                await driver.compare()
    finally:
        await driver.stop()
        await s.close()
        assert s.store is not None
        s.store.close()

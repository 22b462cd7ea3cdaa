"""TTL validation and jitter."""

from __future__ import annotations

import math
import random

import pytest

from tierstore.clock import Jitter, check_seconds, check_ttl


def test_ttl_accepts_none_and_positive_numbers() -> None:
    assert check_ttl(None) is None
    assert check_ttl(5) == 5.0
    assert check_ttl(0.25) == 0.25


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, -math.inf])
def test_ttl_rejects_non_positive_and_non_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        check_ttl(bad)


@pytest.mark.parametrize("bad", ["5", True, False, [5], b"5"])
def test_ttl_rejects_non_numbers_with_an_error_that_is_both_type_and_value_error(bad: object) -> None:
    with pytest.raises(TypeError, match="ttl"):
        check_ttl(bad)
    with pytest.raises(ValueError, match="ttl"):  # every refused ttl is a ValueError
        check_ttl(bad)


def test_jitter_never_shortens_and_stays_within_bounds() -> None:
    jitter = Jitter(0.1, random.Random(7))
    draws = [jitter.draw(100.0) for _ in range(2000)]
    assert all(d is not None and 100.0 <= d <= 110.0 for d in draws)
    assert max(d for d in draws if d is not None) > 109.0  # it does spread
    assert min(d for d in draws if d is not None) < 101.0
    assert jitter.draw(None) is None
    assert Jitter(0.0).draw(30.0) == 30.0


def test_seconds_checks_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        check_seconds(0, "lock_timeout", allow_zero=False)
    assert check_seconds(None, "x", optional=True) is None

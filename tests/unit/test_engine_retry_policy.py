"""Step retry delays: exponential backoff with "equal jitter"."""

from __future__ import annotations

import pytest

from engine._retry import RetryPolicy


def test_delays_grow_exponentially_within_their_jitter_band() -> None:
    policy = RetryPolicy(retries=6, backoff=2.0, initial_delay=0.1, max_delay=30.0)
    for attempt in range(1, 7):
        base = 0.1 * 2 ** (attempt - 1)
        samples = [policy.delay(attempt) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in samples)
        assert max(samples) - min(samples) > base / 4  # jittered, not one fixed value


def test_delay_is_capped_by_max_delay() -> None:
    policy = RetryPolicy(retries=50, backoff=3.0, initial_delay=1.0, max_delay=5.0)
    assert all(2.5 <= policy.delay(40) <= 5.0 for _ in range(100))


@pytest.mark.parametrize(
    "settings", [{"retries": -1}, {"backoff": 0.5}, {"initial_delay": -1}, {"max_delay": -1}]
)
def test_bad_policy_is_refused(settings: dict[str, float]) -> None:
    from engine import ConfigurationError

    with pytest.raises(ConfigurationError):
        RetryPolicy(**settings)  # type: ignore[arg-type]

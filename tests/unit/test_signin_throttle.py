"""The failed sign-in throttle (``node.auth.throttle``) on a clock the test moves."""

from __future__ import annotations

import pytest

from node.auth.throttle import SigninThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def throttle(clock: Clock, **kwargs: int) -> SigninThrottle:
    return SigninThrottle(3, 900, clock=clock, **kwargs)


def test_a_name_is_refused_after_max_failures_until_the_window_passes(clock: Clock) -> None:
    counts = throttle(clock)
    for _ in range(2):
        counts.failed("alice", "10.0.0.1")
        assert counts.retry_after("alice", "10.0.0.1") is None
    clock.now += 100
    counts.failed("Alice", "10.0.0.2")  # names count case-blind, from any address
    assert counts.retry_after("alice", "10.0.0.3") == 800  # from the first failure
    clock.now += 799.5
    assert counts.retry_after("alice", "10.0.0.3") == 1  # never 0 while refused
    clock.now += 0.5
    assert counts.retry_after("alice", "10.0.0.3") is None
    counts.failed("alice", "10.0.0.3")  # a fresh window: one failure
    assert counts.retry_after("alice", "10.0.0.3") is None


def test_an_address_is_refused_for_every_name(clock: Clock) -> None:
    counts = throttle(clock)
    for name in ("a", "b", "c"):
        counts.failed(name, "10.0.0.9")
    assert counts.retry_after("d", "10.0.0.9") == 900
    assert counts.retry_after("d", "10.0.0.8") is None
    counts.succeeded("a")  # a success clears the name, not the address
    assert counts.retry_after("a", "10.0.0.9") == 900


def test_a_success_resets_the_name(clock: Clock) -> None:
    counts = throttle(clock)
    counts.failed("bob", "10.0.0.1")
    counts.failed("bob", "10.0.0.2")
    counts.succeeded("bob")
    counts.failed("bob", "10.0.0.3")
    counts.failed("bob", "10.0.0.4")
    assert counts.retry_after("bob", "10.0.0.5") is None


def test_the_counts_are_bounded_oldest_dropped(clock: Clock) -> None:
    counts = throttle(clock, max_keys=4)
    for _ in range(3):
        counts.failed("old", "")
    assert counts.retry_after("old", "") == 900
    for index in range(4):
        counts.failed(f"new{index}", "")
    assert len(counts) == 4
    assert counts.retry_after("old", "") is None  # forgotten, not grown without end


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_failures"):
        SigninThrottle(0, 900)

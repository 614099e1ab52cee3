"""Fixed windows (``LimitConfig.per_window``) in the shared behaviour suite: every backend,
under ``Limiter`` and ``AsyncLimiter``, on the fake clock."""

from __future__ import annotations

import pytest

from queue_ratelimit import ConfigError, LimitConfig
from tests.conftest import FakeClock
from tests.support import SVC
from tests.unit.conftest import MakeLimiter

DAY = 86_400.0
FAST = SVC.replace(rate_limit_per_sec=1000.0, burst_size=1000.0, max_rate=1000.0)
DAILY = FAST.replace(limits=(LimitConfig.per_window("day", 5, DAY),))
ONE = {"requests": 1.0, "day": 1.0}


def _granted(limiter: object, calls: int) -> list[bool]:
    return [
        limiter.acquire("svc", cost=ONE, max_wait=0.0, reserve=False).granted  # type: ignore[attr-defined]
        for _ in range(calls)
    ]


def test_a_daily_window_grants_exactly_n_until_the_aligned_reset_then_the_next_n(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(DAILY)
    midnight = (clock.now // DAY + 1) * DAY  # the next 00:00 UTC
    assert _granted(limiter, 7) == [True] * 5 + [False] * 2
    refused = limiter.acquire("svc", cost=ONE, max_wait=0.0, reserve=False)
    assert refused.wait == pytest.approx(midnight - clock.now)  # until the reset, exactly
    clock.advance(midnight - clock.now - 1.0)
    assert _granted(limiter, 1) == [False]  # one second before midnight: still spent
    clock.advance(1.0)
    assert _granted(limiter, 7) == [True] * 5 + [False] * 2  # the next day's five


def test_a_backoff_does_not_cut_a_windows_allowance(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(DAILY)
    assert _granted(limiter, 2) == [True, True]
    limiter.on_backoff("svc", retry_after=3.0)
    clock.advance(4.0)  # past the cooldown, and the requests bucket refilled
    assert _granted(limiter, 4) == [True, True, True, False]  # the day's other three


def test_an_idle_key_keeps_its_spent_window_past_idle_ttl(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(DAILY)
    midnight = (clock.now // DAY + 1) * DAY
    if midnight - clock.now < 2 * 3600:  # (the fake clock's day has hours left)
        clock.advance(midnight - clock.now)
    assert _granted(limiter, 5) == [True] * 5
    clock.advance(3600 * 1.2)  # idle past idle_ttl (an hour, and an eighth more)
    assert _granted(limiter, 1) == [False]  # not a fresh allowance


def test_windows_apart_from_the_bucket_and_from_each_other(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    config = FAST.replace(
        limits=(LimitConfig.per_window("minute", 3, 60.0), LimitConfig.per_window("day", 4, DAY))
    )
    limiter = make_limiter(config)
    cost = {"requests": 1.0, "minute": 1.0, "day": 1.0}
    grants = [limiter.acquire("svc", cost=cost, reserve=False).granted for _ in range(4)]
    assert grants == [True, True, True, False]  # the minute's three
    clock.advance(60.0 - clock.now % 60.0)
    grants = [limiter.acquire("svc", cost=cost, reserve=False).granted for _ in range(3)]
    assert grants == [True, False, False]  # the day's fourth, then the day is spent


@pytest.mark.parametrize("window", [-1.0, float("inf"), "day"])
def test_a_bad_window_is_refused_naming_the_field(window: object) -> None:
    with pytest.raises(ConfigError, match=r"limits\.day\.window"):
        LimitConfig("day", 1.0, 5.0, 1.0, 1.0, window=window)  # type: ignore[arg-type]


def test_calls_granted_to_wait_for_the_next_window_are_counted_in_it(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(DAILY)
    midnight = (clock.now // DAY + 1) * DAY
    assert _granted(limiter, 5) == [True] * 5  # today's five
    ahead = [limiter.acquire("svc", cost=ONE, max_wait=2 * DAY, reserve=False) for _ in range(7)]
    assert all(decision.granted for decision in ahead)
    waits = [clock.now + decision.wait for decision in ahead]
    assert waits[:5] == [pytest.approx(midnight)] * 5  # tomorrow's five, paid today
    assert waits[5:] == [pytest.approx(midnight + DAY)] * 2  # then the day after's
    clock.advance(midnight - clock.now)
    assert _granted(limiter, 1) == [False]  # tomorrow is spent already: nothing more
    clock.advance(DAY)
    assert _granted(limiter, 4) == [True] * 3 + [False]  # the day after: five, less two

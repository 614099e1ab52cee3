"""Finding the limit fast: the start phase, and the rates a key remembers once idle.

The shared behaviour suite (memory, one Redis server, a Redis Cluster) on the fake clock: a
single caller takes slots and calls a simulated upstream that serves ``limit`` calls in any
1 s window and answers the rest 429 with ``Retry-After: 1``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import pytest

from queue_ratelimit.limiter import Limiter
from queue_ratelimit.policy.climb import START_HEADROOM
from tests.conftest import FakeClock
from tests.support import SVC
from tests.unit.conftest import MakeLimiter

COLD = SVC.replace(
    rate_limit_per_sec=2.0,
    min_rate=0.1,
    max_rate=100.0,
    increase_factor=0.1,
    decrease_factor=0.5,
    slow_start=True,
    max_wait=10.0,
    max_backoff=300.0,
)
IDLE = 5000.0  # past idle_ttl (3600 s; up to an eighth more in Redis)


@dataclass
class Upstream:
    """A hidden limit: ``limit`` calls served in any 1 s window, 429 beyond."""

    limit: float
    served: list[float] = field(default_factory=list)

    def call(self, now: float) -> bool:
        window = len(self.served) - bisect.bisect_right(self.served, now - 1.0)
        if window >= self.limit:
            return False
        self.served.append(now)
        return True


@dataclass
class Run:
    """What ``drive`` saw: each report's new rate with the time, and the 429s."""

    rates: list[tuple[float, float]] = field(default_factory=list)
    refusals: list[tuple[float, float]] = field(default_factory=list)  # (time, rate sent at)


def drive(limiter: Limiter, clock: FakeClock, upstream: Upstream, seconds: float) -> Run:
    """Call as fast as the limiter grants, for ``seconds`` of the fake clock."""
    run = Run()
    end = clock.now + seconds
    while clock.now < end:
        decision = limiter.acquire("svc", reserve=False)
        if not decision.granted:
            clock.advance(max(decision.wait, 0.001))
            continue
        clock.advance(decision.wait)
        if upstream.call(clock.now):
            result = limiter.on_success("svc")
        else:
            result = limiter.on_backoff("svc", retry_after=1.0, epoch=decision.epoch)
            run.refusals.append((clock.now, result.old_rate))
        run.rates.append((clock.now, result.new_rate))
    return run


def rate(limiter: Limiter) -> float:
    return limiter.snapshot("svc").limit().rate


def test_a_cold_key_finds_the_limit_within_seconds_and_overshoots_at_most_twice(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter, upstream = make_limiter(COLD), Upstream(10.0)
    begin = clock.now
    run = drive(limiter, clock, upstream, 10.0)
    first_at, sent_at = run.refusals[0]
    # from L/5, plain AIMD at 0.1 per success needs ~16 s to reach L; the start phase ~2 s
    assert first_at - begin < 4.0
    # the overshoot stays bounded: twice what was served (counted to about a call)
    assert sent_at <= START_HEADROOM * (upstream.limit + 1)
    # one congestion event: the decrease lands on what was served, near L, and holds
    assert len(run.refusals) == 1
    assert 0.85 * upstream.limit <= rate(limiter) <= 1.1 * upstream.limit


def test_the_start_phase_climbs_no_faster_than_twice_what_is_served(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(COLD.replace(rate_limit_per_sec=5.0))
    served = []
    for _ in range(10):  # one success a second
        assert limiter.acquire("svc").granted
        limiter.on_success("svc")
        served.append(clock.now)
        clock.advance(1.0)
    assert rate(limiter) == pytest.approx(5.0)  # the demand, not the limit, holds it
    run = drive(limiter, clock, Upstream(1000.0), 3.0)  # then demand at the rate
    assert rate(limiter) > 15.0
    served += [t for t, _ in run.rates]
    for t, new_rate in run.rates:  # never past twice the successes of the last 2 s
        recent = bisect.bisect_right(served, t) - bisect.bisect_left(served, t - 2.0)
        assert new_rate <= max(5.0, START_HEADROOM * recent)


def test_a_young_key_climbs_in_its_first_second_too(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    # counted over a whole window, a key 0.2 s old would seem to serve a fifth of its rate
    # and the cap at twice that would hold it at the start for most of its first second
    limiter = make_limiter(COLD.replace(rate_limit_per_sec=5.0))
    run = drive(limiter, clock, Upstream(1000.0), 1.0)
    assert len(run.rates) >= 5
    for _, new_rate in run.rates[1:]:  # each success adds one (e-fold in about a second)
        assert new_rate > 5.0
    assert rate(limiter) >= 10.0


def test_the_first_backoff_ends_the_start_phase(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(COLD)
    drive(limiter, clock, Upstream(1000.0), 2.0)
    limiter.on_backoff("svc", retry_after=1.0)
    clock.advance(1.0)
    before = rate(limiter)
    after = limiter.on_success("svc").new_rate
    assert 0 < after - before <= COLD.increase_factor + 1e-9  # additive (or gentler) again


def test_a_key_without_the_start_phase_climbs_additively(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(COLD.replace(slow_start=False))
    drive(limiter, clock, Upstream(1000.0), 2.0)
    assert rate(limiter) < 3.0  # ~2 x e^(0.1 x 2), where the start phase reaches over 5


def test_an_idle_key_restarts_near_the_limit_it_learned(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter, upstream = make_limiter(COLD), Upstream(10.0)
    drive(limiter, clock, upstream, 30.0)
    clock.advance(IDLE)
    assert not limiter.snapshot("svc").exists  # forgotten as a live key...
    assert limiter.acquire("svc").granted
    revived = rate(limiter)  # ...but not what it learned
    assert abs(revived - upstream.limit) <= 0.1 * upstream.limit
    run = drive(limiter, clock, Upstream(10.0), 5.0)
    assert len(run.refusals) <= 1  # near the ceiling it climbs gently, not from L/5


def test_a_backoff_after_a_restart_forgets_a_limit_that_fell(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(COLD)
    drive(limiter, clock, Upstream(20.0), 10.0)
    clock.advance(IDLE)
    drive(limiter, clock, Upstream(5.0), 10.0)  # the upstream lowered its limit meanwhile
    clock.advance(IDLE)
    assert limiter.acquire("svc").granted
    assert rate(limiter) <= 1.1 * 5.0


def test_a_key_that_never_met_a_backoff_restarts_at_the_rate_it_served(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(COLD.replace(max_rate=8.0))
    drive(limiter, clock, Upstream(1000.0), 5.0)  # capped by max_rate: 8/s served, no 429
    clock.advance(IDLE)
    assert limiter.acquire("svc").granted
    assert rate(limiter) == pytest.approx(8.0)


def test_remember_for_zero_forgets_with_the_key(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(COLD, remember_for=0.0)
    drive(limiter, clock, Upstream(10.0), 10.0)
    clock.advance(IDLE)
    assert limiter.acquire("svc").granted
    assert rate(limiter) == pytest.approx(COLD.rate_limit_per_sec)


def test_what_was_learned_is_forgotten_after_remember_for(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(COLD, remember_for=600.0)
    drive(limiter, clock, Upstream(10.0), 10.0)
    clock.advance(IDLE + 600.0)
    assert limiter.acquire("svc").granted
    assert rate(limiter) == pytest.approx(COLD.rate_limit_per_sec)


def test_a_grant_holds_until_a_congestion_event_or_a_cooldown(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(COLD)
    first = limiter.acquire("svc")
    assert limiter.holds("svc", None, first)
    second = limiter.acquire("svc")  # granted 0.5 s ahead
    limiter.on_success("svc")
    assert limiter.holds("svc", None, second)  # nothing changed the epoch
    limiter.on_backoff("svc", retry_after=1.0, epoch=first.epoch)
    assert not limiter.holds("svc", None, second)  # a new congestion event voids it
    clock.advance(1.0)
    third = limiter.acquire("svc")
    limiter.on_backoff("svc", retry_after=0.0, epoch=third.epoch - 1)  # an older event's
    assert limiter.holds("svc", None, third)
    limiter.on_backoff("svc", retry_after=5.0, epoch=third.epoch - 1)  # lengthens a cooldown
    assert not limiter.holds("svc", None, third)

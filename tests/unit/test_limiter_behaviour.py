"""The limiter's behaviour, one suite run against both backends (memory and real Redis).

Time is a fake clock handed to both backends (Redis takes it as a script argument instead of
its TIME), so the suite constructs states instead of waiting. The ``make_limiter`` fixture
(``conftest.py``) gives each test the memory backend, one Redis server and a Redis Cluster.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing
import os
import signal
import threading

import pytest

from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.config import LimitConfig
from queue_ratelimit.errors import RateLimited
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import plan_for
from queue_ratelimit.policy import aimd
from queue_ratelimit.policy.climb import BAND, PROBE_FLOOR
from queue_ratelimit.policy.delivery import LOG, delivered
from queue_ratelimit.policy.pacing import tolerance
from queue_ratelimit.policy.state import Feedback, Reservation, new_state
from tests.conftest import FakeClock
from tests.support import SVC, backoff_after_barrier, hold_lease_forever
from tests.unit.conftest import MakeLimiter

PLAN = plan_for(SVC)


def test_fresh_key_grants_its_burst_then_throttles(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(burst_size=3.0)
    granted = [limiter.acquire("svc", reserve=False).granted for _ in range(4)]
    assert granted == [True, True, True, False]


def test_wait_within_max_wait_is_granted_with_the_exact_wait(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(max_wait=1.0)
    assert limiter.acquire("svc").wait == 0.0
    second = limiter.acquire("svc")
    assert second.granted
    assert second.wait == pytest.approx(0.1)  # one interval at 10/s


def test_additive_increase_per_success(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    for _ in range(3):
        limiter.on_success("svc")
    assert limiter.snapshot("svc").limit().rate == pytest.approx(13.0)


def test_increase_is_clamped_to_max_rate(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    results = [limiter.on_success("svc") for _ in range(15)]
    assert results[-1].new_rate == 20.0
    assert limiter.snapshot("svc").limit().rate == 20.0


def test_multiplicative_decrease_clamped_to_min_rate(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    rates = []
    for _ in range(6):
        rates.append(limiter.on_backoff("svc").new_rate)
        clock.advance(100)  # past every cooldown: each backoff is a new event
    assert rates == [5.0, 2.5, 1.25, 1.0, 1.0, 1.0]


def test_no_increase_during_cooldown(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter()
    limiter.on_backoff("svc", retry_after=5.0)
    assert limiter.on_success("svc").new_rate == 5.0
    clock.advance(5.0)
    assert limiter.on_success("svc").new_rate == 6.0


def test_cooldown_from_retry_after(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter()
    result = limiter.on_backoff("svc", retry_after=5.0)
    assert result.cooldown_left == 5.0
    clock.advance(4.0)
    denied = limiter.acquire("svc", reserve=False)
    assert (denied.granted, denied.reason) == (False, "cooldown")
    # the cooldown's end, then one interval at the decreased rate (5/s) to earn a token
    assert denied.wait == pytest.approx(1.0 + 0.2)
    clock.advance(1.2)
    assert limiter.acquire("svc").granted


def test_cooldown_without_retry_after_is_a_multiple_of_the_interval(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    result = limiter.on_backoff("svc")
    # rate 10 -> 5; cooldown = cooldown_multiplier (2) x interval (1/5 s)
    assert result.cooldown_left == pytest.approx(0.4)
    assert limiter.snapshot("svc").cooldown_left == pytest.approx(0.4)


@pytest.mark.parametrize(("given", "expected"), [(-3.0, 0.0), (1e9, 86400.0)])
def test_a_stated_retry_after_is_clamped_to_zero_and_max_quota_wait(
    make_limiter: MakeLimiter, given: float, expected: float
) -> None:
    assert make_limiter().on_backoff("svc", retry_after=given).cooldown_left == expected


def test_backoffs_of_one_congestion_event_decrease_once(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(max_wait=10.0)
    decisions = [limiter.acquire("svc") for _ in range(8)]
    results = [limiter.on_backoff("svc", epoch=d.epoch) for d in decisions]
    assert [r.decreased for r in results] == [True] + [False] * 7
    # a call granted after the decrease may decrease again
    clock.advance(10)
    later = limiter.acquire("svc")
    assert limiter.on_backoff("svc", epoch=later.epoch).decreased


def test_backoffs_without_epoch_decrease_once_per_cooldown(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    results = [limiter.on_backoff("svc", retry_after=2.0) for _ in range(8)]
    assert sum(r.decreased for r in results) == 1
    assert limiter.snapshot("svc").limit().rate == 5.0


def test_same_event_backoff_extends_the_cooldown_to_its_retry_after(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter()
    first = limiter.acquire("svc")
    limiter.on_backoff("svc", epoch=first.epoch, retry_after=1.0)
    later = limiter.on_backoff("svc", epoch=first.epoch, retry_after=7.0)
    assert (later.decreased, later.cooldown_left) == (False, 7.0)


def test_eight_concurrent_backoffs_decrease_once(make_limiter: MakeLimiter) -> None:
    """Threads for memory; the Redis backend gets its own test with processes below."""
    limiter = make_limiter(max_wait=10.0)
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def worker() -> None:
        decision = limiter.acquire("svc")
        barrier.wait(timeout=10)
        results.append(limiter.on_backoff("svc", epoch=decision.epoch).decreased)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False] * 7 + [True]
    assert limiter.snapshot("svc").limit().rate == 5.0


@pytest.mark.parametrize("use_epoch", [True, False])
def test_eight_processes_backing_off_on_redis_decrease_once(
    redis_url: str, key_prefix: str, use_epoch: bool
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(8)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=backoff_after_barrier,
            args=(redis_url, key_prefix, SVC, barrier, use_epoch, results),
        )
        for _ in range(8)
    ]
    for p in procs:
        p.start()
    decreased = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sorted(decreased) == [False] * 7 + [True]
    limiter = Limiter(RedisBackend(redis_url, prefix=key_prefix), {"svc": SVC})
    assert limiter.snapshot("svc").limit().rate == 5.0


def test_after_a_backoff_the_rate_climbs_fast_to_near_its_last_ceiling_then_as_time_allows(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(increase_factor=0.4)  # 10/s, +0.4 per success, x0.5 per backoff
    limiter.on_backoff("svc", retry_after=1.0)  # the ceiling met: 10/s; now 5/s
    clock.advance(1.0)
    rates = [limiter.on_success("svc").new_rate for _ in range(12)]
    assert rates == pytest.approx([5.4 + 0.4 * k for k in range(12)])  # fast, up to 9.8/s
    # within the band below the ceiling the time since the backoff sets the pace: it is
    # crossed in BAND seconds, whatever the rate's scale or the successes' pace
    assert limiter.on_success("svc").new_rate == pytest.approx(9.8)  # 1 s in: at 9.7 + 0.0015
    clock.advance(BAND / 2 - 1.0)
    assert limiter.on_success("svc").new_rate == pytest.approx(10.0 * (PROBE_FLOOR + 0.015))
    clock.advance(BAND / 2 + 0.01)
    assert limiter.on_success("svc").new_rate == pytest.approx(10.0)  # at the ceiling...
    assert limiter.on_success("svc").new_rate == pytest.approx(10.4)  # ...and past it, fast:
    # the limit rose (or the next 429 comes at once)


def test_the_ceiling_remembered_is_the_rate_delivered_when_below_the_rate_sent(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(increase_factor=0.01, decrease_factor=0.75)  # 10/s
    for _ in range(8):  # 8 successes in 0.7 s: 8/s delivered while about 10/s were sent
        limiter.on_success("svc")
        clock.advance(0.1)
    sent = limiter.on_backoff("svc", retry_after=1.0).old_rate
    assert sent == pytest.approx(10.08)
    clock.advance(BAND / 2)
    after = limiter.on_success("svc")
    # from 97% of the 8/s delivered (above 10.08 x 0.75) the band climbs towards the 8/s
    # delivered, not the 10.08/s sent: half way after half of BAND, as time allows
    assert after.old_rate == pytest.approx(PROBE_FLOOR * 8.0, abs=1e-6)
    assert after.new_rate - after.old_rate == pytest.approx(0.01)
    rates = [limiter.on_success("svc").new_rate for _ in range(100)]
    assert rates[-1] == pytest.approx(8.0 * (PROBE_FLOOR + 1.0) / 2)


def test_a_decrease_stops_at_the_probe_band_below_the_rate_delivered(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(increase_factor=0.01)  # 10/s, x0.5 per backoff
    for _ in range(9):  # 9/s served: the limit is just below the 10.09/s sent
        limiter.on_success("svc")
        clock.advance(0.1)
    result = limiter.on_backoff("svc", retry_after=1.0)
    assert result.old_rate == pytest.approx(10.09)
    assert result.new_rate == pytest.approx(PROBE_FLOOR * 9.0)  # not 10.09 * 0.5
    for _ in range(3):  # one call in three served: the multiplicative decrease is deeper
        clock.advance(2.0)
        limiter.on_success("svc")
        result = limiter.on_backoff("svc", retry_after=0.5)
    assert result.new_rate == pytest.approx(result.old_rate * 0.5)


def test_the_rate_delivered_counts_the_last_second_exactly() -> None:
    state = new_state(0.0)
    for k in range(10):  # 10 successes 0.1 s apart, counted in slices of 1/3 s: 4, 3, 3
        aimd.on_success(state, 0.1 * k, PLAN)
    assert state.ceiling == pytest.approx(7.0)  # the most in a whole window so far
    # 1.1 s after the first: the 8 logged after 0.1 s (the slices' estimate says 8.8)
    assert delivered(state, 1.1) == 8.0
    assert state.ceiling == pytest.approx(10.0)  # the window 0-1 s, closed by then
    assert delivered(state, 5.0) == 0.0  # a gap longer than the window: nothing


def test_past_the_log_the_rate_delivered_is_counted_in_slices_the_oldest_in_part() -> None:
    state = new_state(0.0)
    count = LOG + LOG // 4  # over the first second, evenly: more than the log holds
    times = [k / count for k in range(count)]
    for at in times:
        aimd.on_success(state, at, PLAN)
    # the log's oldest (0.2 s) lies within the last second at 1.1 s: the whole slices of
    # 1/3 s and the oldest slice weighted by the part of it within that second (0.7)
    first, second, third = (sum(1 for t in times if k / 3 <= t < (k + 1) / 3) for k in range(3))
    assert delivered(state, 1.1) == pytest.approx(second + third + first * 0.7)


def test_a_full_log_within_the_last_second_counts_at_least_its_length() -> None:
    state = new_state(0.0)
    for k in range(LOG + 2):  # all late in the slice [0, 1/3), which is oldest by 1.2 s
        aimd.on_success(state, 0.3 + 0.03 * k / (LOG + 2), PLAN)
    # the slices' estimate weighs that slice by 0.4; the log holds LOG within the last
    # second: so many at least
    assert delivered(state, 1.2) == float(LOG)


@pytest.mark.parametrize(
    ("early", "dense", "at", "served"),
    [
        # 21 successes after 0.2 s, logged: counted exactly (the slices' estimate: 20.8)
        ((0.0, 0.3), 10, 1.2, 21.0),
        # more after 0.25 s than the log holds: the slices' estimate, the oldest slice
        # (holding the call at 0) weighted by the part of it within the last second
        ((0.0,), LOG // 2 + 4, 1.25, 2 * (LOG // 2 + 4) + 1 * 0.25),
    ],
    ids=["logged", "past-the-log"],
)
def test_a_decrease_lands_below_the_successes_of_the_last_second(
    make_limiter: MakeLimiter,
    clock: FakeClock,
    early: tuple[float, ...],
    dense: int,
    at: float,
    served: float,
) -> None:
    limiter = make_limiter(
        rate_limit_per_sec=200.0, max_rate=400.0, increase_factor=0.0, decrease_factor=0.1
    )
    start = clock.now  # the slices start at the first success: [0, 1/3), [1/3, 2/3), ...
    times = [*early]
    step = min(0.01, 0.18 / dense)
    times += [0.705 + step * k for k in range(dense)]  # in the slice [2/3, 1)
    times += [1.005 + step * k for k in range(dense)]  # in the slice [1, 4/3)
    for t in times:
        clock.now = start + t
        limiter.on_success("svc")
    clock.now = start + at
    result = limiter.on_backoff("svc", retry_after=1.0)
    assert result.new_rate == pytest.approx(PROBE_FLOOR * served)


def test_at_a_backoff_a_delivered_rate_just_below_the_ceiling_counts_as_it(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(increase_factor=0.0, rate_limit_per_sec=20.0, decrease_factor=0.25)
    clock.advance(0.01)  # (off the slices' edges)
    for _ in range(16):  # 8/s served for 2 s: whole windows of 8, the ceiling
        limiter.on_success("svc")
        clock.advance(0.125)
    clock.advance(0.05)  # then a short gap: the last second counts short of 8
    first = limiter.on_backoff("svc", retry_after=1.0)
    # within NOISE below the 8/s ceiling: the same limit, counted short
    assert first.new_rate == pytest.approx(PROBE_FLOOR * 8.0)
    clock.advance(1.0)
    for _ in range(10):  # the limit fell: 3/s served now
        limiter.on_success("svc")
        clock.advance(1 / 3)
    fell = limiter.on_backoff("svc", retry_after=1.0)
    # 3/s is far below the ceiling: it is what was served
    assert fell.new_rate == pytest.approx(PROBE_FLOOR * 3.0, rel=0.1)


def test_a_call_that_costs_nothing_still_waits_out_a_cooldown_but_no_debt(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter()  # 10/s, burst 1
    limiter.acquire("svc")
    assert limiter.acquire("svc", max_wait=1.0).wait == pytest.approx(0.1)  # in debt now
    free = limiter.acquire("svc", cost=0.0, max_wait=1.0)
    assert (free.granted, free.wait) == (True, 0.0)  # a debt holds back only what it costs
    limiter.on_backoff("svc", retry_after=3.0)
    held = limiter.acquire("svc", cost=0.0, max_wait=0.0, cooldown_wait=0.0, reserve=False)
    assert (held.granted, held.reason, held.wait) == (False, "cooldown", pytest.approx(3.0))


def test_a_lowered_max_rate_holds_from_the_next_call(make_limiter: MakeLimiter) -> None:
    fast = SVC.replace(rate_limit_per_sec=20.0, max_rate=20.0)
    limiter = make_limiter(fast)
    limiter.acquire("svc")  # the key runs at 20/s
    slower = Limiter(limiter.backend, {"svc": fast.replace(rate_limit_per_sec=5.0, max_rate=5.0)})
    assert slower.acquire("svc", max_wait=1.0).wait == pytest.approx(1 / 5.0)  # not 1/20


def test_a_cooldown_and_the_wait_after_it_each_count_up_to_max_wait(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()  # 10/s, burst 1; after the backoff 5/s
    limiter.on_backoff("svc", retry_after=0.8)
    waits = [limiter.acquire("svc", max_wait=1.0) for _ in range(6)]
    # 0.8 s of cooldown, then slots 0.2 s apart: 1.0 .. 1.8 s are slept (each part <= 1 s)
    assert [d.granted for d in waits] == [True] * 5 + [False]
    assert [d.wait for d in waits[:5]] == pytest.approx([1.0, 1.2, 1.4, 1.6, 1.8])
    assert waits[5].reason == "cooldown" and waits[5].reservation is not None
    limiter.on_backoff("svc", retry_after=1.5, epoch=waits[0].epoch)  # a longer cooldown
    assert not limiter.acquire("svc", max_wait=1.0).granted


def test_max_sleepers_caps_the_places_in_line_slept(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()  # 10/s, burst 1: slots 0, 0.1, 0.2, 0.3 s away
    decisions = [limiter.acquire("svc", max_wait=1.0, max_sleepers=2) for _ in range(4)]
    assert [d.granted for d in decisions] == [True, True, True, False]
    assert decisions[3].reservation is not None
    assert decisions[3].wait == pytest.approx(0.3, abs=1e-6)


def test_wait_with_a_timeout_sleeps_no_cooldown_beyond_it(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(max_wait=1.0)  # after the backoff: 0.8 s cooldown, then 5/s
    limiter.on_backoff("svc", retry_after=0.8)
    assert limiter.acquire("svc", max_wait=1.0, reserve=False).wait == pytest.approx(1.0)
    with pytest.raises(RateLimited):
        limiter.wait("svc", timeout=1.0)  # 1.2 s away: beyond the timeout given
    # without a timeout, the integration's own bounds: 0.8 s of cooldown (cooldown_wait
    # unset: up to max_wait), then 0.4 s in line (up to max_wait)
    granted = limiter.acquire("svc", reserve=False)
    assert granted.granted and granted.wait == pytest.approx(1.2)


def test_cooldown_wait_zero_requeues_what_a_cooldown_holds_beyond_max_wait(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(cooldown_wait=0.0)  # for workers that serve other queues too
    limiter.on_backoff("svc", retry_after=0.8)
    waits = [limiter.acquire("svc", max_wait=1.0) for _ in range(2)]
    assert [(d.granted, round(d.wait, 6)) for d in waits] == [(True, 1.0), (False, 1.2)]


def test_reservations_are_spaced_by_the_rate(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter()
    decisions = [limiter.acquire("svc") for _ in range(100)]
    assert decisions[0].granted
    slots = [d.reservation.slot for d in decisions[1:] if d.reservation is not None]
    assert len(slots) == 99
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert gaps == pytest.approx([0.1] * 98, abs=1e-6)  # microsecond resolution
    assert slots[0] - clock.now == pytest.approx(0.1)
    assert limiter.snapshot("svc").limit().reserved == pytest.approx(99.0)


def test_a_reservation_is_redeemed_at_its_slot_without_paying_twice(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    limiter.acquire("svc")
    first = limiter.acquire("svc")
    second = limiter.acquire("svc")
    assert first.reservation is not None and second.reservation is not None
    early = limiter.acquire("svc", reservation=second.reservation)
    assert not early.granted
    assert early.reservation == second.reservation
    assert early.wait == pytest.approx(0.2)
    clock.advance(0.1)
    for r in (first.reservation, second.reservation):
        redeemed = limiter.acquire("svc", reservation=r)
        assert (redeemed.granted, redeemed.reason) == (True, "redeemed")
        clock.advance(0.1)
    # the debt of both reservations was paid when they were made: the bucket is full again
    assert limiter.snapshot("svc").limit().tokens == pytest.approx(1.0, abs=1e-5)


TOL = tolerance(10.0)  # how far a call may run ahead of the schedule at 10/s


def _holders(limiter: Limiter, count: int) -> list[Reservation]:
    """``count`` reservations behind one granted call: at 10/s, slots 0.1 s apart."""
    assert limiter.acquire("svc").granted
    held = [limiter.acquire("svc").reservation for _ in range(count)]
    assert all(r is not None for r in held)
    return [r for r in held if r is not None]


def test_holders_that_come_back_late_together_are_spread_at_the_rate(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()  # 10/s, burst 1
    held = _holders(limiter, 5)  # slots 0.1 .. 0.5
    clock.advance(2.0)  # every holder is late, and they come back together
    waits = []
    for reservation in held:
        redeemed = limiter.acquire("svc", reservation=reservation, max_wait=1.0)
        assert (redeemed.granted, redeemed.reason) == (True, "redeemed")
        waits.append(redeemed.wait)
    spread = [max(0.0, 0.1 * i - TOL) for i in range(5)]  # a sleep each, not a burst
    assert waits == pytest.approx(spread, abs=1e-6)


def test_late_holders_are_spread_after_a_fresh_call_granted_among_them(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()  # 10/s, burst 1
    held = _holders(limiter, 3)
    clock.advance(2.0)  # the holders are late; the bucket is full again
    fresh = limiter.acquire("svc", max_wait=1.0)  # granted now: the schedule runs to +0.1
    assert (fresh.granted, fresh.reason, fresh.wait) == (True, "ok", 0.0)
    waits = [limiter.acquire("svc", reservation=r, max_wait=1.0).wait for r in held]
    assert waits == pytest.approx([0.1 * i - TOL for i in (1, 2, 3)], abs=1e-6)


@pytest.mark.parametrize("max_wait", [1.0, 0.0])
def test_a_holder_on_time_keeps_to_the_schedule_behind_late_ones_within_max_wait(
    make_limiter: MakeLimiter, clock: FakeClock, max_wait: float
) -> None:
    limiter = make_limiter()  # 10/s, burst 1, past its start phase (plain AIMD)
    held = _holders(limiter, 4)  # slots 0.1 .. 0.4
    clock.advance(0.35)  # the first three are late and come back together
    for reservation in held[:3]:  # granted at 0.35, 0.45 and 0.55: the schedule runs to 0.65
        assert limiter.acquire("svc", reservation=reservation, max_wait=1.0).granted
    clock.advance(0.05)
    on_time = limiter.acquire("svc", reservation=held[3], max_wait=max_wait)
    assert (on_time.granted, on_time.reason) == (True, "redeemed")  # never sent back for it
    # not 0.05 s after the call at 0.35, when it may sleep; at its slot when it may not
    expected = 0.25 - TOL if max_wait else 0.0
    assert on_time.wait == pytest.approx(expected, abs=1e-6)


def test_in_the_start_phase_a_holder_on_time_is_not_held_back_by_late_ones(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(slow_start=True)  # 10/s, burst 1, climbing: the ledger's slots
    held = _holders(limiter, 4)
    clock.advance(0.35)
    late = [limiter.acquire("svc", reservation=r, max_wait=1.0) for r in held[:3]]
    assert [d.wait for d in late] == pytest.approx([0.0, 0.1 - TOL, 0.2 - TOL], abs=1e-6)
    clock.advance(0.05)
    on_time = limiter.acquire("svc", reservation=held[3])
    assert (on_time.granted, on_time.reason) == (True, "redeemed")
    assert on_time.wait == pytest.approx(0.0, abs=1e-6)


def test_past_the_start_phase_a_fresh_call_keeps_to_the_schedule(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()  # 10/s, burst 1
    held = _holders(limiter, 2)  # slots 0.1, 0.2
    clock.advance(0.3)  # both late: granted at 0.3 and 0.4, the schedule runs to 0.5
    redeemed = [limiter.acquire("svc", reservation=r, max_wait=1.0) for r in held]
    assert [d.wait for d in redeemed] == pytest.approx([0.0, 0.1 - TOL], abs=1e-6)
    clock.advance(0.1)  # the bucket holds a token again: the ledger would grant at once
    fresh = limiter.acquire("svc", max_wait=1.0)
    assert (fresh.granted, fresh.reason) == (True, "ok")
    assert fresh.wait == pytest.approx(0.1 - TOL, abs=1e-6)


def test_a_reservation_falls_due_sooner_when_the_rate_rises_and_keeps_its_place(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()  # 10/s, +1/s per success, at most 20/s
    limiter.acquire("svc")
    held = [limiter.acquire("svc").reservation for _ in range(20)]
    last = held[-1]
    assert last is not None and last.slot - clock.now == pytest.approx(2.0)
    for _ in range(10):
        limiter.on_success("svc")  # the rate doubles to 20/s
    early = limiter.acquire("svc", reservation=last)
    assert not early.granted
    assert early.wait == pytest.approx(1.0)  # its 20 units ahead now pass at 20/s
    assert early.reservation is not None and early.reservation.due == last.due
    newcomer = limiter.acquire("svc")
    assert newcomer.wait == pytest.approx(1.05)  # behind every reservation, not before
    clock.advance(1.0)
    assert limiter.acquire("svc", reservation=last).reason == "redeemed"


def test_a_reservation_holder_comes_back_early_while_the_rate_climbs(
    make_limiter: MakeLimiter,
) -> None:
    climbing = make_limiter()
    climbing.acquire("svc")
    decisions = [climbing.acquire("svc") for _ in range(30)]
    last = decisions[-1]
    assert last.recheck is not None and last.recheck < last.wait  # 3.0 s at a steady 10/s
    # from 10/s gaining 1/s per unit: 10 units take ln(2) s to reach the 20/s cap, the
    # other 20 units take 1 s at 20/s
    assert last.recheck == pytest.approx(math.log(2.0) + 1.0, abs=1e-6)
    steady = make_limiter(increase_factor=0.0)
    steady.acquire("svc")
    flat = [steady.acquire("svc") for _ in range(30)][-1]
    assert flat.recheck == pytest.approx(flat.wait)


def test_a_backoff_voids_earlier_reservations(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter()
    limiter.acquire("svc")
    held = limiter.acquire("svc").reservation
    assert held is not None
    limiter.on_backoff("svc", retry_after=1.0)
    assert limiter.snapshot("svc").limit().reserved == 0.0  # debts forgiven
    clock.advance(1.0)
    again = limiter.acquire("svc", reservation=held)
    assert again.reason != "redeemed"
    assert again.reservation is not None and again.reservation.epoch != held.epoch


def test_concurrency_lease_is_released_on_report(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(max_concurrent=1, burst_size=10.0)
    held = limiter.acquire("svc")
    assert held.lease is not None
    busy = limiter.acquire("svc")
    assert (busy.granted, busy.reason, busy.reservation) == (False, "concurrency", None)
    limiter.on_success("svc", lease=held.lease)
    assert limiter.acquire("svc").granted


def test_concurrency_lease_of_a_dead_holder_is_reclaimed(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    config = dataclasses.replace(SVC, max_concurrent=1, burst_size=10.0, lease_ttl=30.0)
    limiter = make_limiter(config)
    if make_limiter.kind == "memory":  # type: ignore[attr-defined]
        holder = threading.Thread(target=lambda: limiter.acquire("svc"))  # dies holding it
        holder.start()
        holder.join()
    else:
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Queue()
        url, prefix = make_limiter.url, make_limiter.prefix  # type: ignore[attr-defined]
        proc = ctx.Process(target=hold_lease_forever, args=(url, prefix, config, clock.now, ready))
        proc.start()
        assert ready.get(timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
    assert limiter.snapshot("svc").leases == 1
    assert limiter.acquire("svc").reason == "concurrency"
    clock.advance(30.0)
    assert limiter.acquire("svc").granted


def test_multiple_limits_are_granted_all_or_nothing(make_limiter: MakeLimiter) -> None:
    tokens = LimitConfig(
        "tokens", rate_limit_per_sec=100.0, burst_size=100.0, min_rate=1.0, max_rate=1000.0
    )
    limiter = make_limiter(burst_size=10.0, limits=(tokens,))
    assert limiter.acquire("svc", cost={"tokens": 80}).granted
    denied = limiter.acquire("svc", cost={"tokens": 80}, reserve=False)
    assert (denied.granted, denied.reason) == (False, "rate")
    assert denied.wait == pytest.approx(0.6)  # 60 tokens short at 100/s
    snap = limiter.snapshot("svc")
    # the refused call took nothing from either limit
    assert snap.limit("requests").tokens == pytest.approx(9.0)
    assert snap.limit("tokens").tokens == pytest.approx(20.0)
    assert limiter.acquire("svc", cost={"requests": 9, "tokens": 20}).granted


def test_backoff_decreases_every_limit(make_limiter: MakeLimiter) -> None:
    tokens = LimitConfig(
        "tokens",
        rate_limit_per_sec=100.0,
        burst_size=100.0,
        min_rate=1.0,
        max_rate=1000.0,
        decrease_factor=0.25,
    )
    limiter = make_limiter(limits=(tokens,))
    limiter.on_backoff("svc")
    snap = limiter.snapshot("svc")
    assert (snap.limit("requests").rate, snap.limit("tokens").rate) == (5.0, 25.0)


def test_snapshot_and_reset(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    assert not limiter.snapshot("svc").exists
    limiter.on_backoff("svc", retry_after=3.0)
    snap = limiter.snapshot("svc")
    assert snap.exists and snap.cooldown_left == 3.0 and snap.limit().rate == 5.0
    limiter.reset("svc")
    assert not limiter.snapshot("svc").exists
    assert limiter.acquire("svc").granted


def test_snapshots_of_many_keys_read_each_as_snapshot_does_in_order(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter()
    backend, plan = limiter.backend, limiter._prepare("svc").plan
    tenants: list[str | None] = [f"t{i}" for i in range(2500)]  # more than one pipeline
    for tenant in tenants[:3]:
        limiter.acquire("svc", tenant)
    limiter.on_backoff("svc", "t1", retry_after=7.0)
    limiter.set_breaker("svc", "open", 30.0)
    wanted = [None, "t1", "t0", "never", "t2", *tenants[3:]]
    many = backend.snapshots("svc", wanted, plan)
    assert many == [backend.snapshot("svc", tenant, plan) for tenant in wanted]
    assert [snap.exists for snap in many[:5]] == [False, True, True, False, True]
    assert many[1].cooldown_left == 7.0 and many[1].breaker == "open"
    assert backend.snapshots("svc", [], plan) == []


def test_snapshots_count_each_keys_leases_under_a_concurrency_limit(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(max_concurrent=3, burst_size=5.0)
    backend, plan = limiter.backend, limiter._prepare("svc").plan
    for tenant, held in (("a", 2), ("b", 1), ("c", 0)):
        for _ in range(held):
            assert limiter.acquire("svc", tenant).lease
    snaps = backend.snapshots("svc", ["a", "b", "c", "none"], plan)
    assert [snap.leases for snap in snaps] == [2, 1, 0, 0]
    assert snaps == [backend.snapshot("svc", t, plan) for t in ("a", "b", "c", "none")]


def test_tenants_have_separate_state(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limiter.on_backoff("svc", "ws-1", retry_after=10.0)
    assert not limiter.acquire("svc", "ws-1").granted
    assert limiter.acquire("svc", "ws-2").granted
    assert limiter.acquire("svc").granted


def test_idle_keys_expire(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter(SVC.replace(max_backoff=2000.0))
    limiter.acquire("svc")
    if make_limiter.kind in ("redis", "cluster"):  # type: ignore[attr-defined]
        backend = limiter.backend
        assert isinstance(backend, RedisBackend)
        state_key = backend.keys_for("svc", None)[0]
        week = 7 * 86400 * 1000  # kept a week longer for what it learned (remember_for)
        # idle_ttl (3600 s) after the last use, and at most an eighth more (REFRESH)
        assert 3_599_000 + week < backend.client.pttl(state_key) <= 4_050_100 + week
        limiter.on_backoff("svc", retry_after=1000.0)  # a cooldown lengthens its life
        assert 4_599_000 + week < backend.client.pttl(state_key) <= 5_050_100 + week
        clock.advance(1000.0)
    clock.advance(4051.0)
    assert not limiter.snapshot("svc").exists


def test_a_key_in_debt_lives_idle_ttl_past_its_schedule(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    slow = SVC.replace(rate_limit_per_sec=0.001, min_rate=0.001, max_rate=0.001)
    limiter = make_limiter(slow, increase_factor=0.0)
    limiter.acquire("svc")  # the burst; the arrival schedule runs 1000 s ahead
    ahead = limiter.acquire("svc", max_wait=5000.0)  # granted 1000 s ahead: a debt
    assert ahead.granted and ahead.wait == pytest.approx(1000.0)
    busy = 2000.0  # the schedule now runs two calls (2000 s) ahead
    if make_limiter.kind in ("redis", "cluster"):  # type: ignore[attr-defined]
        backend = limiter.backend
        assert isinstance(backend, RedisBackend)
        assert backend.client.pttl(backend.keys_for("svc", None)[0]) > (busy + 3600) * 1000
    else:
        clock.advance(busy + 3599.0)
        assert limiter.snapshot("svc").exists


def test_a_key_whose_debt_was_forgiven_is_forgotten_idle_ttl_later(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    slow = SVC.replace(max_wait=0.0, rate_limit_per_sec=0.1, min_rate=0.01)
    limiter = make_limiter(slow, remember_for=0.0)
    for _ in range(200):  # 200 reservations at 0.1/s: a debt of 2000 s
        limiter.acquire("svc", reserve=True)
    limiter.on_backoff("svc", retry_after=0.0)  # a congestion event forgives it
    clock.advance(3600 * 1.25 + 1.0)  # idle_ttl, and what Redis may add (REFRESH)
    assert not limiter.snapshot("svc").exists
    assert limiter.acquire("svc").granted


def test_costs_that_can_never_be_granted_are_rejected(make_limiter: MakeLimiter) -> None:
    from queue_ratelimit.errors import InvalidRequest

    limiter = make_limiter()
    with pytest.raises(InvalidRequest, match="burst"):
        limiter.acquire("svc", cost=2.0)
    with pytest.raises(InvalidRequest, match="no limit named 'tokens'"):
        limiter.acquire("svc", cost={"tokens": 1.0})
    with pytest.raises(InvalidRequest, match="'1' for 'requests' is not a number"):
        limiter.acquire("svc", cost={"requests": "1"})  # type: ignore[dict-item]


BREAKER = dataclasses.replace(
    SVC, burst_size=100.0, breaker_failure_threshold=3, breaker_open_seconds=30.0
)


def test_consecutive_failures_open_the_breaker_for_every_tenant(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(BREAKER)
    results = [limiter.on_failure("svc", "ws-1") for _ in range(3)]
    assert [(r.breaker, r.breaker_changed) for r in results] == [
        ("closed", False),
        ("closed", False),
        ("open", True),
    ]
    for tenant in ("ws-1", "ws-2", None):
        denied = limiter.acquire("svc", tenant)
        assert (denied.granted, denied.reason, denied.reservation) == (False, "breaker_open", None)
        assert denied.wait == 30.0
    snap = limiter.snapshot("svc", "ws-9")
    assert (snap.breaker, snap.breaker_failures, snap.breaker_wait) == ("open", 3, 30.0)


def test_a_success_resets_the_failure_count(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(BREAKER)
    for _ in range(5):
        limiter.on_failure("svc")
        limiter.on_failure("svc")
        limiter.on_success("svc")
    assert limiter.snapshot("svc").breaker == "closed"
    assert limiter.acquire("svc").granted


def test_half_open_lets_one_probe_through_and_its_success_closes(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(BREAKER)
    for _ in range(3):
        limiter.on_failure("svc")
    limiter.on_success("svc")  # a call that was already in flight: changes nothing
    assert limiter.snapshot("svc").breaker == "open"
    clock.advance(30.0)
    probe = limiter.acquire("svc", "ws-1")
    assert (probe.granted, probe.reason) == (True, "probe")
    held = limiter.acquire("svc", "ws-2")
    assert (held.granted, held.reason, held.wait) == (False, "breaker_open", 30.0)
    closed = limiter.on_success("svc", "ws-1")
    assert (closed.breaker, closed.breaker_changed) == ("closed", True)
    assert limiter.acquire("svc", "ws-2").granted


def test_a_probe_refused_for_its_own_key_goes_to_the_next_caller(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(BREAKER)
    limiter.on_backoff("svc", "cooling", retry_after=50.0)  # this tenant waits 50 s
    for _ in range(3):
        limiter.on_failure("svc")
    clock.advance(30.0)
    refused = limiter.acquire("svc", "cooling", max_wait=0.0, cooldown_wait=0.0)
    assert (refused.granted, refused.reason) == (False, "cooldown")
    assert limiter.snapshot("svc").breaker == "open"  # the probe was not taken
    probe = limiter.acquire("svc", "ws-2")
    assert (probe.granted, probe.reason) == (True, "probe")


def test_a_failed_probe_opens_the_breaker_again(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(BREAKER)
    for _ in range(3):
        limiter.on_failure("svc")
    clock.advance(30.0)
    assert limiter.acquire("svc").reason == "probe"
    reopened = limiter.on_failure("svc")
    assert (reopened.breaker, reopened.breaker_changed) == ("open", True)
    assert limiter.acquire("svc").wait == 30.0


def test_a_lost_probe_is_replaced_after_the_open_interval(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(BREAKER)
    for _ in range(3):
        limiter.on_failure("svc")
    clock.advance(30.0)
    assert limiter.acquire("svc").reason == "probe"  # and its worker dies: no report
    clock.advance(29.0)
    assert limiter.acquire("svc").reason == "breaker_open"
    clock.advance(1.0)
    assert limiter.acquire("svc").reason == "probe"  # the replacement, lost as well
    assert limiter.acquire("svc").reason == "breaker_open"  # its turn lasts open_seconds
    clock.advance(30.0)
    assert limiter.acquire("svc").reason == "probe"
    assert limiter.snapshot("svc").breaker_holds


def test_an_operator_can_force_the_breaker(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter(BREAKER)
    limiter.set_breaker("svc", "open", 120.0)
    denied = limiter.acquire("svc", "ws-1")
    assert (denied.reason, denied.wait) == ("breaker_open", 120.0)
    limiter.set_breaker("svc", "closed")
    assert limiter.acquire("svc", "ws-1").granted
    assert limiter.snapshot("svc").breaker == "closed"


QUOTA = dataclasses.replace(SVC, burst_size=10.0, max_wait=0.0)


def test_a_published_remaining_of_zero_holds_every_call_until_the_reset(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(QUOTA)
    result = limiter.on_success("svc", feedback=Feedback(quotas={"requests": (0, 5.0)}))
    assert not result.decreased
    held = limiter.acquire("svc", reserve=False)
    assert (held.granted, held.wait) == (False, pytest.approx(5.0))
    clock.advance(5.0)  # the window resets; the empty bucket earns its next token (11/s)
    assert limiter.acquire("svc", reserve=False).wait == pytest.approx(1 / 11, abs=1e-6)
    clock.advance(1 / 11)
    assert limiter.acquire("svc").granted


def test_a_published_quota_caps_the_tokens_and_paces_the_window(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(QUOTA)  # 10/s, burst 10: would grant 10 at once
    limiter.on_success("svc", feedback=Feedback(quotas={"requests": (4, 2.0)}))
    decisions = [limiter.acquire("svc") for _ in range(6)]
    assert [d.granted for d in decisions] == [True] * 4 + [False] * 2
    # the quota is spent: the rest waits for its reset, however fast the bucket refills
    assert [d.wait for d in decisions[4:]] == [pytest.approx(2.0)] * 2
    clock.advance(2.0)
    limiter.on_success("svc", feedback=Feedback(quotas={"requests": (4, 2.0)}))
    clock.advance(0.2)
    # after the cap, tokens refill at the quota's pace: 4 per 2 s, not 10/s
    assert limiter.snapshot("svc").limit().tokens == pytest.approx(4 - 2 + 0.2 * 2.0, abs=1e-6)


def test_a_schedule_laid_at_a_quotas_pace_ends_with_its_window(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()  # 10/s, burst 1, past its start phase
    limiter.on_success("svc", feedback=Feedback(quotas={"requests": (3, 60.0)}))
    clock.advance(50.0)
    assert limiter.acquire("svc", max_wait=1.0).granted  # at the quota's pace: 1 per 30 s
    clock.advance(10.0)  # the window resets: 10/s again
    fresh = limiter.acquire("svc", max_wait=1.0)  # the bucket's one token, at 10/s:
    assert fresh.granted and fresh.wait <= 0.1 + 1e-6  # not held until 80 s
    after = limiter.acquire("svc", max_wait=1.0)
    assert after.granted and after.wait <= 0.2 + 1e-6  # the next token, 0.1 s on


def test_remaining_is_lowered_by_calls_granted_since_the_answered_one(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(QUOTA)
    answered = limiter.acquire("svc")
    for _ in range(3):  # three more calls leave before the first one's answer arrives
        limiter.acquire("svc")
    feedback = Feedback(quotas={"requests": (5, 10.0)}, seq=answered.seq)
    limiter.on_success("svc", feedback=feedback)
    granted = [limiter.acquire("svc").granted for _ in range(3)]
    assert granted == [True, False, False]  # 5 - 3 in flight - 1 kept in reserve = 1 left


def test_an_estimated_cost_is_corrected_by_the_actual_usage(make_limiter: MakeLimiter) -> None:
    tokens = LimitConfig(
        "tokens", rate_limit_per_sec=10.0, burst_size=1000.0, min_rate=1.0, max_rate=100.0
    )
    limiter = make_limiter(burst_size=10.0, limits=(tokens,))
    limiter.acquire("svc", cost={"tokens": 500})  # estimated
    assert limiter.snapshot("svc").limit("tokens").tokens == pytest.approx(500.0)
    limiter.on_success("svc", feedback=Feedback(adjust={"tokens": 300 - 500}))  # used 300
    assert limiter.snapshot("svc").limit("tokens").tokens == pytest.approx(700.0)
    limiter.on_success("svc", feedback=Feedback(adjust={"tokens": 900}))  # under-estimated
    assert limiter.snapshot("svc").limit("tokens").tokens == pytest.approx(-200.0)
    assert not limiter.acquire("svc", cost={"tokens": 100}, reserve=False).granted


def test_fleet_wide_event_counts_per_key_and_summed(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(burst_size=1.0)
    limiter.on_backoff("svc", "ws-1", retry_after=1.0)
    limiter.on_backoff("svc", "ws-2", retry_after=1.0)
    limiter.count("svc", "requeues", "ws-1")
    limiter.count("svc", "budget_exhausted", "ws-1")
    assert limiter.acquire("svc", "ws-2", max_wait=0.0, refusal_event="requeues").granted is False
    assert limiter.stats("svc") == {"backoffs": 2, "requeues": 2, "budget_exhausted": 1}
    assert limiter.snapshot("svc", "ws-1").counts == {
        "backoffs": 1,
        "requeues": 1,
        "budget_exhausted": 1,
    }
    assert limiter.snapshot("svc", "ws-2").counts == {"backoffs": 1, "requeues": 1}


def test_a_key_with_no_state_counts_nothing(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limiter.count("svc", "requeues", "never-used")
    assert limiter.stats("svc") == {}
    assert list(limiter.backend.scan("svc")) == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("concurrent", [None, 1])
def test_a_refusal_counts_its_event_in_the_same_decision(
    make_limiter: MakeLimiter, concurrent: int | None
) -> None:
    limiter = make_limiter(max_concurrent=concurrent)
    first = limiter.acquire("svc", "ws-1", max_wait=0.0, refusal_event="requeues")
    assert first.granted and (first.lease is not None) == (concurrent is not None)
    refused = [
        limiter.acquire("svc", "ws-1", max_wait=0.0, refusal_event="requeues") for _ in range(2)
    ]
    uncounted = limiter.acquire("svc", "ws-1", max_wait=0.0)  # refused too, but counts nothing
    assert not any(decision.granted for decision in [*refused, uncounted])
    assert limiter.stats("svc") == {"requeues": 2}  # grants are never counted


def test_names_that_cannot_be_encoded_are_invalid_requests(make_limiter: MakeLimiter) -> None:
    import json

    from queue_ratelimit.errors import InvalidRequest

    limiter = make_limiter()
    lone = json.loads('"\\ud800"')  # a lone surrogate, as JSON from a client may carry
    for call in (
        lambda: limiter.acquire("svc", lone),
        lambda: limiter.on_success("svc", lone),
        lambda: limiter.snapshot("svc", "ok-" + lone),
        lambda: limiter.acquire(lone),
    ):
        with pytest.raises(InvalidRequest, match="cannot be encoded"):
            call()
    assert limiter.acquire("svc", "caf\u00e9").granted  # any other text is a tenant


def test_scan_lists_each_key_and_purge_forgets_an_integration(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    backend = limiter.backend
    for tenant in (None, "acme", "a:b {c}"):
        limiter.acquire("svc", tenant)
    limiter.count("svc", "requeues")
    assert sorted(backend.scan("svc"), key=str) == sorted(
        [("svc", None), ("svc", "acme"), ("svc", "a:b {c}")], key=str
    )
    assert set(backend.scan()) >= set(backend.scan("svc"))
    assert list(backend.scan("other")) == []
    backend.purge("svc")
    assert list(backend.scan("svc")) == []
    assert backend.stats("svc") == {}

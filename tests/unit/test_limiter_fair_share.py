"""Fair share of an integration-wide limit (``policy/fair.py``) in the shared behaviour
suite: every backend, under ``Limiter`` and ``AsyncLimiter``, on the fake clock. Tenants ask
in a fixed order each tick, so without fair share the first one takes everything."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

from queue_ratelimit import ConfigError, LimitConfig
from queue_ratelimit.policy.state import Decision
from tests.conftest import FakeClock
from tests.support import SVC
from tests.unit.conftest import MakeLimiter

# tenants limited at 100/s each, all of them together at 10/s
SHARED = SVC.replace(
    rate_limit_per_sec=100.0,
    burst_size=1.0,
    max_rate=100.0,
    increase_factor=0.0,
    app_limit=LimitConfig("app", 10.0, 1.0, 10.0, 10.0),
)

# each tenant held to 5/s by its own limit, all of them together to 20/s: the fleet test's
FIVE_UNDER_TWENTY = SHARED.replace(
    rate_limit_per_sec=5.0,
    max_rate=5.0,
    min_rate=5.0,
    app_limit=LimitConfig("app", 20.0, 1.0, 20.0, 20.0),
)


def _workers(
    limiter: object,
    clock: FakeClock,
    workers: dict[str, int],
    seconds: float,
    every: dict[str, float] | None = None,
) -> tuple[Counter[str], list[float]]:
    """Each tenant's workers run its tasks as a task gate does: a wait of one place in line
    (up to 1 s) is slept; a task refused is requeued with its reservation and comes back when
    the decision says, while its worker takes the next one. A worker asks every 10 ms when it
    is free (its tenant's, no sooner than ``every`` seconds after its last call). Returns
    the calls made per tenant, and the waits slept by the tenants in ``every``."""
    free = {(tenant, i): clock.now for tenant, count in workers.items() for i in range(count)}
    held: dict[tuple[str, int], object] = {}  # a requeued task's reservation
    end = clock.now + seconds
    calls: Counter[str] = Counter()
    waits: list[float] = []
    while clock.now < end:
        clock.advance(0.01)
        for worker, at in free.items():
            if at > clock.now:
                continue
            decision = limiter.acquire(  # type: ignore[attr-defined]
                "svc", worker[0], max_wait=1.0, max_sleepers=1, reservation=held.pop(worker, None)
            )
            if decision.granted:
                slot = clock.now + decision.wait  # it sleeps, then calls
                free[worker] = max(slot, clock.now + (every or {}).get(worker[0], 0.0))
                calls[worker[0]] += slot <= end
                if every and worker[0] in every:
                    waits.append(decision.wait)
            else:  # requeued: back when told, with its reservation
                held[worker] = decision.reservation
                free[worker] = clock.now + decision.come_back
    return calls, waits


def _borrowing_backlog(make_limiter: MakeLimiter, clock: FakeClock) -> tuple[Any, list[Decision]]:
    """A tenant held to 5/s by its own limit, alone under an app's 20/s, whose 60 tasks are
    taken off its queue every 25 ms: refused by its own limit while the app's rate is to
    spare, most of them borrow and book no share. The limiter and the refused decisions."""
    limiter = make_limiter(FIVE_UNDER_TWENTY)
    booked = [limiter.acquire("svc", "noisy", max_wait=0.0)]
    for _ in range(59):
        clock.advance(0.025)
        booked.append(limiter.acquire("svc", "noisy", max_wait=0.0))
    clock.advance(0.025)
    held = [d for d in booked if not d.granted and d.reservation is not None]
    unbooked = [d for d in held if d.reservation.due[-1] == -1.0]  # type: ignore[union-attr]
    assert len(unbooked) >= len(held) / 2  # it borrowed: no share booked
    return limiter, held


def test_backlogged_tenants_share_the_limit_evenly(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    calls, _ = _workers(make_limiter(SHARED), clock, {"a": 6, "b": 2, "c": 1}, 12.0)
    assert sum(calls.values()) == pytest.approx(120, abs=3)  # the whole 10/s is used
    for tenant in "abc":
        assert calls[tenant] == pytest.approx(40, abs=4)


def test_without_fair_share_the_most_workers_take_the_most(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(SHARED.replace(fair_share=False))
    calls, _ = _workers(limiter, clock, {"a": 8, "b": 1}, 9.0)
    assert calls["b"] <= 15 and calls["a"] >= 75  # what fair share prevents


def test_weights_divide_the_limit(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter(SHARED.replace(tenant_weights={"big": 3.0}))
    calls, _ = _workers(limiter, clock, {"small": 4, "big": 4}, 12.0)
    assert calls["big"] == pytest.approx(90, abs=5)
    assert calls["small"] == pytest.approx(30, abs=5)


def test_what_a_quiet_tenant_leaves_goes_to_the_busy_one(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(SHARED)
    calls, _ = _workers(limiter, clock, {"busy": 8, "quiet": 1}, 10.0, {"quiet": 1.0})
    assert calls["quiet"] >= 8  # about one call a second: its share is there when it asks
    assert calls["busy"] >= 70  # most of the rest, not half of it
    assert calls["busy"] + calls["quiet"] >= 80  # (it counts as active while it waits)


def test_a_tenant_that_stops_leaves_its_share_to_the_others(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(SHARED)
    _workers(limiter, clock, {"a": 4, "b": 4}, 3.0)
    _workers(limiter, clock, {"a": 4}, 2.0)  # b stops: its booked share runs out, then GRACE
    later, _ = _workers(limiter, clock, {"a": 4}, 3.0)
    assert later["a"] >= 27  # all of the 10/s (bar the new workers' start)


def test_a_backlog_booked_alone_yields_to_a_tenant_that_arrives(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(SHARED)
    booked: list[Decision] = []
    for _ in range(100):  # busy books 100 calls while alone: 10 s of the whole limit
        decision = limiter.acquire("svc", "busy", max_wait=0.0)
        if not decision.granted:
            booked.append(decision)
    granted: Counter[str] = Counter()
    for _ in range(600):  # 6 s: busy redeems its earliest booking, new asks, every 10 ms
        clock.advance(0.01)
        if booked:
            held = booked[0].reservation
            redeemed = limiter.acquire("svc", "busy", max_wait=0.0, reservation=held)
            if redeemed.granted:
                booked.pop(0)
                granted["busy"] += 1
        granted["new"] += limiter.acquire("svc", "new", max_wait=0.0, reserve=False).granted
    assert granted["new"] == pytest.approx(30, abs=5)  # its half, though busy booked first
    assert granted["busy"] == pytest.approx(30, abs=5)


def test_a_backlog_booked_while_it_borrowed_yields_its_share_later(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    """Alone, a tenant's own limit holds it back and it borrows the app's spare rate: its
    reservations book no share. When others arrive, its calls come back and pay their share
    then, as new calls do: it gets its share, not its own limit."""
    limiter, held = _borrowing_backlog(make_limiter, clock)
    due = {i: clock.now + d.come_back for i, d in enumerate(held)}
    calls: Counter[str] = Counter()
    free = {f"q{k}": clock.now for k in range(9)}
    kept: dict[str, object] = {}  # a quiet tenant's requeued task's reservation
    for _ in range(500):  # 5 s: nine quiet tenants keep asking; noisy's come back when due
        clock.advance(0.01)
        for tenant, at in free.items():
            if at <= clock.now:
                decision = limiter.acquire(
                    "svc", tenant, max_wait=1.0, max_sleepers=1, reservation=kept.pop(tenant, None)
                )
                if decision.granted:
                    calls["quiet"] += 1
                    free[tenant] = clock.now + decision.wait
                else:
                    kept[tenant] = decision.reservation
                    free[tenant] = clock.now + decision.come_back
        for i, at in list(due.items()):
            if at <= clock.now:
                decision = limiter.acquire(
                    "svc", "noisy", max_wait=1.0, max_sleepers=1, reservation=held[i].reservation
                )
                if decision.granted:
                    calls["noisy"] += 1
                    del due[i]
                else:
                    due[i] = clock.now + decision.come_back
    assert calls["noisy"] <= 15  # about its share: 20/s among ten, not its own 5/s (25)
    assert calls["quiet"] >= 80


def test_weights_without_an_app_limit_are_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="tenant_weights"):
        SVC.replace(tenant_weights={"big": 3.0})


def test_due_holders_sent_back_come_back_one_at_a_time(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    """A tenant's holders whose slots have all come, redeemed together with one place in
    line each, are sent back told places one interval apart (``fair.tell``), not the same
    moment: coming back when told, nearly each is served at its first return, instead of
    all racing again for each next unit (``benchmarks/fair_replay.py``)."""
    limiter = make_limiter(FIVE_UNDER_TWENTY)
    booked = [limiter.acquire("svc", "noisy", max_wait=0.0) for _ in range(20)]
    held = [d.reservation for d in booked if not d.granted and d.reservation is not None]
    assert len(held) >= 15
    clock.advance(10.0)  # every slot has come
    told: dict[int, float] = {}
    for i, reservation in enumerate(held):  # all at once, as a worker pool takes them
        decision = limiter.acquire(
            "svc", "noisy", max_wait=1.0, max_sleepers=1, reservation=reservation
        )
        if not decision.granted:
            told[i] = clock.now + decision.come_back
    assert len(told) >= 10  # one place in line: most are sent back
    places = sorted(told.values())
    assert all(b - a >= 0.2 - 1e-6 for a, b in itertools.pairwise(places))
    again = 0  # returns refused once more
    while told:
        i, at = min(told.items(), key=lambda item: item[1])
        clock.advance(max(0.0, at - clock.now))
        decision = limiter.acquire(
            "svc", "noisy", max_wait=1.0, max_sleepers=1, reservation=held[i]
        )
        if decision.granted:
            del told[i]
        else:
            again += 1
            told[i] = clock.now + decision.come_back
    assert again <= len(held) // 4

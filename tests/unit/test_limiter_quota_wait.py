"""Long quotas: a wait the upstream states past ``max_backoff`` (a daily quota spent, its reset
a day away) holds the key until then, parks tasks without spending their budget, and is
announced once. The shared behaviour suite (memory, Redis, Redis Cluster) on the fake clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from queue_ratelimit import signals
from queue_ratelimit.errors import ConfigError
from queue_ratelimit.policy.state import Feedback
from queue_ratelimit.tasks import Requeue, Run, TaskCall, TaskGate, Ticket
from tests.conftest import FakeClock
from tests.support import SVC
from tests.unit.conftest import MakeLimiter

DAY = 86400.0
QUOTA = SVC.replace(max_backoff=300.0, max_wait=1.0, requeue_budget=2)


@pytest.fixture
def announced() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def record(sender: object, **fields: Any) -> None:
        seen.append(fields)

    signals.quota_exhausted.connect(record)
    yield seen
    signals.quota_exhausted.disconnect(record)


def test_a_reset_a_day_away_holds_the_key_until_then_and_is_announced_once(
    make_limiter: MakeLimiter, clock: FakeClock, announced: list[dict[str, Any]]
) -> None:
    limiter = make_limiter(QUOTA)
    decision = limiter.acquire("svc")
    # several tasks in flight meet the same answer: one hold, one announcement
    results = [limiter.on_backoff("svc", retry_after=DAY, epoch=decision.epoch) for _ in range(4)]
    assert results[0].cooldown_left == pytest.approx(DAY)  # not clamped to max_backoff
    assert [r.exhausted for r in results] == [True, False, False, False]
    assert len(announced) == 1
    assert announced[0]["integration"] == "svc" and announced[0]["retry_after"] == DAY
    clock.advance(DAY - 600.0)
    refused = limiter.acquire("svc", reserve=False)
    assert (refused.granted, refused.reason) == (False, "exhausted")
    assert refused.wait == pytest.approx(600.0 + 1 / 5.0)  # the reset, then a slot at 5/s
    clock.advance(600.0 - 60.0)  # the hold left is within max_backoff: a plain cooldown
    assert limiter.acquire("svc", reserve=False).reason == "cooldown"
    clock.advance(60.0 + 1 / 5.0)
    assert limiter.acquire("svc").granted


def test_a_stated_wait_is_clamped_to_max_quota_wait_and_an_unstated_one_to_max_backoff(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(QUOTA.replace(max_quota_wait=3600.0, cooldown_multiplier=1e6))
    assert limiter.on_backoff("svc", retry_after=30 * DAY).cooldown_left == pytest.approx(3600.0)
    clock.advance(3600.0)
    assert limiter.on_backoff("svc").cooldown_left == pytest.approx(300.0)


def test_tasks_held_by_a_spent_quota_are_parked_until_the_reset_spending_no_budget(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(QUOTA)
    gate = TaskGate(limiter, max_countdown=600.0, clock=clock, rng=lambda: 0.5)
    limiter.on_backoff("svc", retry_after=DAY)
    last = gate.before(TaskCall("svc"), Ticket(requeues=2))  # its budget (2) spent: kept
    assert isinstance(last, Requeue) and (last.reason, last.ticket.requeues) == ("exhausted", 2)
    requeues = [gate.before(TaskCall("svc"), Ticket(requeues=1)) for _ in range(3)]
    assert all(isinstance(r, Requeue) and r.reason == "exhausted" for r in requeues)
    assert [r.ticket.requeues for r in requeues] == [1, 1, 1]  # the budget untouched
    slots = [r.ticket.reservation.slot for r in requeues]  # type: ignore[union-attr]
    reset = clock.now + DAY
    assert slots == pytest.approx([reset + k / 5.0 for k in (1, 2, 3)])  # spread at the rate
    tickets = [r.ticket for r in requeues]
    while clock.now < reset:  # parked in hops no longer than max_countdown, all free
        hops = [gate.before(TaskCall("svc"), t) for t in tickets]
        assert all(isinstance(h, Requeue) and h.ticket.requeues == 1 for h in hops)
        tickets = [h.ticket for h in hops]  # type: ignore[union-attr]
        clock.advance(hops[0].countdown)  # type: ignore[union-attr]
    clock.advance(3 / 5.0)
    ran = [gate.before(TaskCall("svc"), t) for t in tickets]
    assert all(isinstance(v, Run) for v in ran)


def test_a_body_that_meets_a_long_stated_wait_is_parked_without_spending_budget(
    make_limiter: MakeLimiter,
) -> None:
    gate = TaskGate(make_limiter(QUOTA), max_countdown=600.0, rng=lambda: 0.5)
    requeue = gate.rate_limited(TaskCall("svc"), Ticket(requeues=2), retry_after=DAY)
    assert (requeue.reason, requeue.ticket.requeues) == ("exhausted", 2)
    assert requeue.countdown == 600.0 and requeue.ticket.not_before is not None


def test_a_spent_published_quota_with_a_far_reset_refuses_as_exhausted(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(QUOTA)
    decision = limiter.acquire("svc")
    limiter.on_success("svc", feedback=Feedback(quotas={"requests": (0.0, DAY)}, seq=decision.seq))
    refused = limiter.acquire("svc", reserve=False)
    assert (refused.granted, refused.reason) == (False, "exhausted")
    assert refused.wait == pytest.approx(DAY)


def test_max_quota_wait_below_max_backoff_is_refused_at_startup() -> None:
    with pytest.raises(ConfigError, match="max_quota_wait"):
        SVC.replace(max_backoff=600.0, max_quota_wait=60.0)

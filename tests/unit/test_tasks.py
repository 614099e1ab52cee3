"""The framework-neutral task gate: run or requeue, tickets, parking, budgets."""

from __future__ import annotations

import dataclasses
import math

import pytest

from queue_ratelimit import Limiter, MemoryBackend
from queue_ratelimit.errors import RequeueBudgetExhausted
from queue_ratelimit.policy.state import Reservation
from queue_ratelimit.tasks import Requeue, Run, TaskCall, TaskGate, Ticket
from tests.conftest import FakeClock
from tests.support import SVC, RedisProcess


@pytest.fixture
def gate(clock: FakeClock) -> TaskGate:
    config = dataclasses.replace(SVC, max_wait=0.5, requeue_budget=3)
    limiter = Limiter(MemoryBackend(clock=clock), {"svc": config})
    return TaskGate(limiter, max_countdown=10.0, clock=clock, rng=lambda: 0.5)


def test_a_free_slot_runs_now(gate: TaskGate) -> None:
    verdict = gate.before(TaskCall("svc"), Ticket())
    assert isinstance(verdict, Run) and verdict.decision.granted


def test_a_long_wait_requeues_with_the_reserved_slot_and_redeems_it(
    gate: TaskGate, clock: FakeClock
) -> None:
    gate.limiter.on_backoff("svc", retry_after=3.0)
    verdict = gate.before(TaskCall("svc"), Ticket())
    assert isinstance(verdict, Requeue)
    assert verdict.reason == "cooldown"
    # the slot is 3.2 s away (the cooldown, then 1 / 5 per s); the task comes back as early
    # as the climbing rate may bring it (3 + ln(1.2) s), with no jitter: its slot is its own
    back = 3.0 + math.log(1.2)
    assert verdict.countdown == pytest.approx(back)
    assert verdict.ticket.requeues == 1 and verdict.ticket.reservation is not None
    clock.advance(verdict.countdown)
    again = gate.before(TaskCall("svc"), verdict.ticket)
    assert isinstance(again, Run) and again.decision.reason == "redeemed"


def test_a_requeue_without_a_reserved_slot_is_jittered(gate: TaskGate) -> None:
    verdict = gate.rate_limited(TaskCall("svc"), Ticket(), retry_after=2.0)
    assert verdict.ticket.reservation is None
    assert verdict.countdown == pytest.approx(2.0 + 0.5 * 0.1 * 2.0)  # rng 0.5, jitter 0.1


def test_one_tenant_holds_at_most_tenant_sleepers_workers_sleeping(gate: TaskGate) -> None:
    # 10/s, burst 1, max_wait 0.5 s: five tasks in a row would sleep 0 .. 0.4 s in workers
    untenanted = [gate.before(TaskCall("svc"), Ticket()) for _ in range(5)]
    assert all(isinstance(v, Run) for v in untenanted)
    tenanted = [gate.before(TaskCall("svc", "ws-1"), Ticket()) for _ in range(4)]
    # the default tenant_sleepers is 1: one place in line (0.1 s) is slept, the rest requeue
    # with a reservation, so the worker moves on to other tenants' tasks
    assert [type(v).__name__ for v in tenanted] == ["Run", "Run", "Requeue", "Requeue"]
    assert all(v.ticket.reservation is not None for v in tenanted[2:])  # type: ignore[union-attr]
    assert isinstance(gate.before(TaskCall("svc", "ws-2"), Ticket()), Run)  # its own line


def test_max_sleepers_caps_the_workers_asleep_for_an_integration(clock: FakeClock) -> None:
    config = dataclasses.replace(SVC, max_wait=0.5, max_sleepers=1)  # workers shared
    gate = TaskGate(Limiter(MemoryBackend(clock=clock), {"svc": config}), clock=clock)
    verdicts = [gate.before(TaskCall("svc"), Ticket()) for _ in range(3)]
    assert [type(v).__name__ for v in verdicts] == ["Run", "Run", "Requeue"]


def test_waits_beyond_max_countdown_are_parked_in_hops(gate: TaskGate, clock: FakeClock) -> None:
    gate.limiter.on_backoff("svc", retry_after=25.0)
    first = gate.before(TaskCall("svc"), Ticket())
    assert isinstance(first, Requeue) and first.countdown == 10.0
    assert first.ticket.not_before is not None
    clock.advance(10.0)
    hop = gate.before(TaskCall("svc"), first.ticket)
    assert isinstance(hop, Requeue) and hop.reason == "parked"
    assert hop.ticket == first.ticket  # parking costs no budget
    clock.advance(hop.countdown)
    assert isinstance(gate.before(TaskCall("svc"), hop.ticket), Requeue)  # the last hop


def test_the_budget_ends_in_a_typed_failure(gate: TaskGate) -> None:
    ticket = Ticket(requeues=3)
    with pytest.raises(RequeueBudgetExhausted, match="requeued 3 times"):
        gate.rate_limited(TaskCall("svc", "ws-1"), ticket, retry_after=1.0)
    assert gate.rate_limited(TaskCall("svc", requeue_budget=5), Ticket(2), 1.0).ticket.requeues == 3


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "not json",
        "[]",
        '{"requeues": -1}',
        '{"requeues": "x"}',
        b"\xff",
        '{"reservation": [1]}',
        '{"not_before": "nan"}',
        42,
        '{"requeues": Infinity}',
        '{"reservation": [1e400, 1.5]}',
        '{"reservation": [7, NaN]}',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_unreadable_tickets_are_fresh_tickets(header: object) -> None:
    assert Ticket.loads(header) == Ticket()


def test_tickets_round_trip() -> None:
    ticket = Ticket(4, Reservation(1_800_000_000_000_000, 1_800_000_001.25), 1_800_000_100.5)
    assert Ticket.loads(ticket.dumps()) == ticket
    marked = Ticket(1, Reservation(7, 1_800_000_001.25, (12.5, 300.0)))
    assert Ticket.loads(marked.dumps()) == marked
    hostile = '{"reservation": [7, 1.5, ["nan", 1e400]]}'
    assert Ticket.loads(hostile) == Ticket(0, Reservation(7, 1.5))  # slot kept, marks dropped


def test_a_task_comes_back_early_when_the_rate_may_have_climbed(
    gate: TaskGate, clock: FakeClock
) -> None:
    tickets = []
    for _ in range(20):
        verdict = gate.before(TaskCall("svc"), Ticket())
        if isinstance(verdict, Requeue):
            tickets.append((verdict.countdown, verdict.ticket))
    countdown, ticket = tickets[-1]
    assert ticket.reservation is not None
    assert countdown < ticket.reservation.slot - clock.now  # sooner than the slot
    for _ in range(10):
        gate.limiter.on_success("svc")  # it did climb: 10/s -> 20/s
    clock.advance(countdown)
    again = gate.before(TaskCall("svc"), ticket)
    assert isinstance(again, Run) and again.decision.reason == "redeemed"


def test_a_task_out_of_budget_reserves_nothing(gate: TaskGate) -> None:
    gate.limiter.on_backoff("svc", retry_after=3.0)
    with pytest.raises(RequeueBudgetExhausted):
        gate.before(TaskCall("svc"), Ticket(requeues=3))
    assert gate.limiter.snapshot("svc").limit().reserved == 0.0  # no slot paid for nothing


def test_coming_back_early_for_a_reserved_slot_spends_no_budget(
    gate: TaskGate, clock: FakeClock
) -> None:
    tickets = [gate.before(TaskCall("svc"), Ticket()) for _ in range(20)]
    first = tickets[-1]
    assert isinstance(first, Requeue) and first.ticket.requeues == 1
    clock.advance(first.countdown)  # back early: the rate did not climb as it might have
    again = gate.before(TaskCall("svc"), first.ticket)
    assert isinstance(again, Requeue) and again.reason == "recheck"
    assert again.ticket.requeues == 1  # the budget of 3 is untouched
    assert again.ticket.reservation is not None
    assert again.ticket.reservation.epoch == first.ticket.reservation.epoch  # type: ignore[union-attr]
    for _ in range(50):  # its slot comes, however many rechecks it takes
        if not isinstance(again, Requeue):
            break
        clock.advance(again.countdown)
        again = gate.before(TaskCall("svc"), again.ticket)
    else:
        pytest.fail("the reserved slot never came in 50 rechecks")
    assert again.decision.reason == "redeemed"


def test_a_redis_outage_met_in_the_body_spends_no_budget(gate: TaskGate) -> None:
    spent = gate.rate_limited(TaskCall("svc"), Ticket(3), 2.0, reason="backend_unavailable")
    assert spent.reason == "backend_unavailable" and spent.ticket.requeues == 3
    with pytest.raises(RequeueBudgetExhausted):
        gate.rate_limited(TaskCall("svc"), Ticket(3), 2.0)


def test_a_requeue_for_the_rate_costs_one_round_trip_and_is_counted(
    private_redis: RedisProcess,
) -> None:
    import redis as redis_py

    from queue_ratelimit.backends.redis import RedisBackend

    server = private_redis.start()
    config = dataclasses.replace(SVC, max_wait=0.0, requeue_budget=3)
    # (the breaker's view is read once per breaker_poll: not within this test)
    backend = RedisBackend(server.url, prefix="qrl-trip", breaker_poll=600.0)
    limiter = Limiter(backend, {"svc": config})
    gate = TaskGate(limiter)
    assert isinstance(gate.before(TaskCall("svc"), Ticket()), Run)  # the burst
    client = redis_py.Redis.from_url(server.url)
    client.config_resetstat()
    sent: list[object] = []  # every command the backend's client sends: its round trips
    send = backend.client.execute_command
    backend.client.execute_command = lambda *a, **k: sent.append(a[0]) or send(*a, **k)  # type: ignore[method-assign]
    requeue = gate.before(TaskCall("svc"), Ticket())
    calls = client.info("commandstats")
    assert isinstance(requeue, Requeue) and requeue.reason == "rate"
    assert calls["cmdstat_evalsha"]["calls"] == 1  # the acquire; no second call to count it
    assert sent == ["EVALSHA"]  # nor any other command
    assert limiter.stats("svc") == {"requeues": 1}
    with pytest.raises(RequeueBudgetExhausted):  # no budget left: no requeue to count
        gate.before(TaskCall("svc"), Ticket(requeues=3))
    assert limiter.stats("svc") == {"requeues": 1, "budget_exhausted": 1}

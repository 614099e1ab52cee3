"""The task runner every framework uses: its limits and its run."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from queue_ratelimit import (
    ConfigError,
    Limiter,
    MemoryBackend,
    RateLimited,
    TaskLimits,
    requeue_after,
)
from queue_ratelimit.context import TaskInfo
from queue_ratelimit.policy.state import Reservation
from queue_ratelimit.runner import TaskRun
from queue_ratelimit.tasks import Requeue, Run, TaskCall, TaskGate, Ticket
from tests.conftest import FakeClock
from tests.support import SVC


def _run(clock: FakeClock, call: TaskCall | None = None) -> TaskRun:
    config = dataclasses.replace(SVC, max_wait=0.5, requeue_budget=3)
    gate = TaskGate(Limiter(MemoryBackend(clock=clock), {"svc": config}), clock=clock)
    return TaskRun(gate, call or TaskCall("svc"), Ticket(), TaskInfo("t", "1"))


def test_a_body_runs_with_its_slot_and_gives_back_its_result(clock: FakeClock) -> None:
    assert _run(clock).run(lambda: "done") == "done"


@pytest.mark.parametrize("swallow", [False, True])
def test_requeue_after_in_a_body_requeues_even_past_except_exception(
    clock: FakeClock, swallow: bool
) -> None:
    def body() -> str:
        try:
            raise requeue_after(3.0, report=False)
        except Exception:  # the body's own handler must not eat the requeue
            return "swallowed"

    def plain() -> str:
        raise requeue_after(3.0, report=False)

    outcome = _run(clock).run(body if swallow else plain)
    assert isinstance(outcome, Requeue)
    assert outcome.reason == "backoff" and outcome.wait >= 3.0
    assert outcome.ticket.requeues == 1


def test_a_rate_limited_raised_past_the_hook_requeues_too(clock: FakeClock) -> None:
    def body() -> None:
        raise RateLimited(2.0, "svc")

    outcome = _run(clock).run(body)
    assert isinstance(outcome, Requeue) and outcome.wait >= 2.0


def test_outside_a_run_requeue_after_is_a_plain_rate_limited() -> None:
    exc = requeue_after(1.5)
    assert isinstance(exc, RateLimited) and exc.retry_after == 1.5


def test_the_message_overrides_the_task_and_the_task_its_integration() -> None:
    limits = TaskLimits("svc", tenant=lambda ws: ws, cost=lambda ws: 2.0, requeue_budget=4)
    call = limits.call(("ws-1",), {}, {"max_wait": 0.5})
    assert call == TaskCall("svc", "ws-1", 2.0, requeue_budget=4, max_wait=0.5)
    assert limits.call(("ws-1",), {}, {"requeue_budget": 0}).requeue_budget == 0


def test_an_id_given_as_an_int_is_the_tenant_of_its_decimal_string() -> None:
    limits = TaskLimits("svc", tenant=lambda account, page: account)
    assert limits.call((123, "p"), {}).tenant == "123"
    assert limits.call(("acme", "p"), {}).tenant == "acme"
    assert limits.call((True, "p"), {}).tenant is True  # (not an id: the limiter refuses it)


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("integration", {"integration": ""}),
        ("tenant", {"integration": "svc", "tenant": 3}),
        ("requeue_budget", {"integration": "svc", "requeue_budget": -1}),
        ("requeue_budget", {"integration": "svc", "requeue_budget": True}),
        ("max_wait", {"integration": "svc", "max_wait": "soon"}),
    ],
)
def test_invalid_limits_fail_naming_the_field(field: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        TaskLimits(**options)
    assert caught.value.field == field


def test_an_invalid_per_message_option_fails_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        TaskLimits("svc").call((), {}, {"max_wait": -2})
    assert caught.value.field == "max_wait"


def test_a_granted_slot_is_announced_before_its_wait_is_slept(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    monkeypatch.setattr("queue_ratelimit.runner.time.sleep", lambda s: events.append("sleep"))
    first = _run(clock)
    assert first.admit() is None and events == []  # takes the burst of 1: no wait
    later = TaskRun(first.gate, TaskCall("svc"), Ticket(), TaskInfo("t", "2"))
    assert later.admit(granted=lambda: events.append("granted")) is None
    assert events == ["granted", "sleep"]  # RQ forgets the ticket before the sleep


def test_an_outage_requeue_redeems_nothing(clock: FakeClock) -> None:
    run = _run(clock)
    first = run.run(lambda: None)
    assert first is None
    held = Reservation(1, clock() + 5.0, ())
    run = TaskRun(run.gate, TaskCall("svc"), Ticket(reservation=held), TaskInfo("t", "2"))
    before = run.gate.limiter.snapshot("svc")
    requeue = run.outage(2.0)
    after = run.gate.limiter.snapshot("svc")  # tokens, epoch, cooldown untouched (the
    assert dataclasses.replace(after, counts={}) == dataclasses.replace(before, counts={})
    assert after.counts == {"requeues": 1}  # requeue is counted, as every requeue is)
    assert requeue.reason == "backend_unavailable" and requeue.ticket.reservation is None
    assert requeue.ticket.requeues == 0  # no budget spent


def _slept_for(
    run: TaskRun, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, during: Any
) -> None:
    """The run's sleeps advance the fake clock, and ``during`` runs in the first one."""
    from queue_ratelimit import runner

    pending = [during]

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if pending:
            pending.pop()()

    monkeypatch.setattr(runner.time, "sleep", sleep)


def test_a_slot_voided_by_a_backoff_met_while_sleeping_is_asked_for_again(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(clock)
    limiter = run.gate.limiter
    assert limiter.acquire("svc").granted  # the burst: this task's slot is 0.1 s away
    # another worker meets a 429 while this one sleeps for its slot
    _slept_for(run, clock, monkeypatch, lambda: limiter.on_backoff("svc", retry_after=2.0))
    outcome = run.run(lambda: "called")
    assert isinstance(outcome, Requeue) and outcome.reason == "cooldown"  # not a 429 more


def test_a_slot_that_still_holds_after_the_sleep_runs(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(clock)
    limiter = run.gate.limiter
    assert limiter.acquire("svc").granted
    _slept_for(run, clock, monkeypatch, lambda: limiter.on_success("svc"))
    assert run.run(lambda: "called") == "called"


def test_a_sleep_stopped_for_other_work_requeues_the_task_to_ask_afresh(
    clock: FakeClock,
) -> None:
    run = _run(clock)
    limiter = run.gate.limiter
    assert limiter.acquire("svc").granted  # the burst: this task's slot is 0.1 s away
    held = Reservation(1, clock() + 0.1, ())
    run.ticket = Ticket(requeues=2, reservation=held)
    waits: list[float] = []
    run.pause = lambda seconds: waits.append(seconds) or False  # the thread is wanted
    ran: list[str] = []
    outcome = run.run(lambda: ran.append("body"))
    assert isinstance(outcome, Requeue) and outcome.reason == "yielded"
    assert ran == [] and len(waits) == 1 and waits[0] > 0
    assert 0 < outcome.wait <= waits[0] * (1 + run.gate.jitter)  # when its slot would come
    assert outcome.ticket.requeues == 3 and outcome.ticket.reservation is None  # one spent


def test_a_breakers_probe_sleeps_its_whole_wait(clock: FakeClock) -> None:
    from queue_ratelimit.policy.state import Decision

    run = _run(clock)
    probe = Run(Decision(True, 0.01, "probe", 0, None, clock()))
    run.gate.before = lambda call, ticket: probe  # type: ignore[method-assign]
    run.pause = lambda seconds: False  # would give way, but the one probe must go
    assert run.run(lambda: "called") == "called"


def test_a_call_within_a_bound_caps_its_wait_and_sleeps_no_cooldown_apart() -> None:
    config = dataclasses.replace(SVC, max_wait=1.0, cooldown_wait=30.0)
    assert TaskCall("svc").within(0.1, config) == TaskCall("svc", max_wait=0.1, cooldown_wait=0.0)
    assert TaskCall("svc", max_wait=0.05).within(0.1, config).max_wait == 0.05

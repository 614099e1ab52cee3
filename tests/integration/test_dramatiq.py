"""RateLimitMiddleware on real Dramatiq workers and brokers, against a hidden-limit upstream:
what is Dramatiq's own (the scenarios every framework shares: test_scenarios.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from queue_ratelimit import (
    BackendError,
    ConfigError,
    Limiter,
    MemoryBackend,
    requeue_after,
    signals,
)
from queue_ratelimit.errors import RateLimited, RequeueBudgetExhausted
from queue_ratelimit.integrations.dramatiq import RateLimitMiddleware
from tests.conftest import FakeClock
from tests.integration.dramatiq_harness import dapp, dramatiq_rig
from tests.support import SVC, wait_until

BROKERS = ["redis", "rabbitmq"]


# -- in one process, on dramatiq's StubBroker: what must never depend on timing --------------


class _BrokenBackend(MemoryBackend):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def acquire(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


@pytest.fixture
def stub() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    yield broker
    broker.close()


def _run(broker: StubBroker, queue: str) -> None:
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        broker.join(queue, fail_fast=False, timeout=10_000)
        worker.join()
    finally:
        worker.stop()


def test_invalid_actor_options_fail_when_the_actor_is_declared(stub: StubBroker) -> None:
    stub.add_middleware(RateLimitMiddleware(Limiter(MemoryBackend(), {"svc": SVC})))
    for options in ({"integration": "nope"}, {"integration": "svc", "tenant": 5}, {"tenant": "t"}):
        with pytest.raises(ConfigError):
            dramatiq.actor(broker=stub, actor_name=f"a{len(stub.actors)}", **options)(print)
    with pytest.raises(ConfigError, match="requeue_budget"):
        dramatiq.actor(broker=stub, integration="svc", requeue_budget=-1)(print)


def test_the_worker_timeout_is_lowered_at_boot_so_a_full_prefetch_is_refilled_soon(
    stub: StubBroker,
) -> None:
    stub.add_middleware(RateLimitMiddleware(Limiter(MemoryBackend(), {"svc": SVC})))
    dramatiq.actor(broker=stub, queue_name="svc", integration="svc")(print)
    timeouts = {}
    for asked in (1000, 40):  # Dramatiq's default is lowered; a shorter one is kept
        worker = dramatiq.Worker(stub, worker_timeout=asked, worker_threads=1)
        worker.start()
        try:
            timeouts[asked] = {c.worker_timeout for c in worker.consumers.values()}
        finally:
            worker.stop()
    assert timeouts == {1000: {100}, 40: {40}}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        *(("consumer_backoff", v) for v in (0, 0.005, -1.0, True, "0.1")),
        *(("crowded_wait", v) for v in (-0.1, True, "0.1", float("nan"))),
    ],
)
def test_an_invalid_setting_fails_naming_it(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        RateLimitMiddleware(Limiter(MemoryBackend(), {"svc": SVC}), **{field: value})


def test_a_failing_limiter_dead_letters_the_message_instead_of_running_it(
    stub: StubBroker,
) -> None:
    broken = _BrokenBackend(RuntimeError("a bug, not an outage"))
    stub.add_middleware(RateLimitMiddleware(Limiter(broken, {"svc": SVC})))
    ran: list[int] = []
    work = dramatiq.actor(broker=stub, queue_name="svc", integration="svc")(ran.append)
    work.send(1)
    _run(stub, "svc")
    assert ran == []  # never unguarded, although Dramatiq swallows middleware errors
    (dead,) = stub.dead_letters
    assert isinstance(dead._exception, RuntimeError)
    assert "retries" not in dead.options


def test_an_unreachable_backend_failing_closed_requeues_the_message(stub: StubBroker) -> None:
    broken = Limiter(_BrokenBackend(BackendError("redis is down")), {"svc": SVC})
    stub.add_middleware(RateLimitMiddleware(broken))
    ran: list[int] = []
    work = dramatiq.actor(broker=stub, queue_name="svc", integration="svc")(ran.append)
    work.send(1)
    reasons: list[str] = []

    def requeued(sender: object, **fields: Any) -> None:
        reasons.append(fields["reason"])

    signals.task_requeued.connect(requeued)
    worker = dramatiq.Worker(stub, worker_timeout=50, worker_threads=1)
    worker.start()
    try:  # back on the broker, delayed until the backend may answer again
        wait_until(lambda: reasons, timeout=10)
    finally:
        worker.stop()
        signals.task_requeued.disconnect(requeued)
    assert reasons[0] == "backend_unavailable"
    assert ran == []
    assert stub.dead_letters == []


def test_an_actors_cost_is_charged_per_message_and_checked_when_declared(
    stub: StubBroker, clock: FakeClock
) -> None:
    config = SVC.replace(burst_size=5.0, max_wait=5.0)
    limiter = Limiter(MemoryBackend(clock=clock), {"svc": config})  # time stands still
    stub.add_middleware(RateLimitMiddleware(limiter))
    ran: list[int] = []
    work = dramatiq.actor(
        broker=stub, queue_name="svc", integration="svc", cost=lambda n: float(n)
    )(ran.append)
    work.send(4)
    _run(stub, "svc")
    assert ran == [4]
    assert limiter.snapshot("svc").limit().tokens == 5.0 - 4.0  # the message paid 4
    with pytest.raises(ConfigError, match="cost"):
        dramatiq.actor(broker=stub, integration="svc", cost=6.0)(print)  # above the burst


def test_a_per_message_budget_overrides_the_actors(stub: StubBroker) -> None:
    stub.add_middleware(RateLimitMiddleware(Limiter(MemoryBackend(), {"svc": SVC})))
    runs: list[int] = []

    @dramatiq.actor(broker=stub, queue_name="svc", integration="svc", requeue_budget=5)
    def backs_off(n: int) -> None:
        runs.append(n)
        raise requeue_after(retry_after=0.01, report=False)

    backs_off.send_with_options(args=(1,), requeue_budget=0)
    _run(stub, "svc")
    assert runs == [1]
    (dead,) = stub.dead_letters
    assert isinstance(dead._exception, RequeueBudgetExhausted)


@pytest.mark.parametrize("broker", BROKERS)
def test_a_stale_copy_is_dropped_and_the_latest_runs(broker: str, redis_url: str) -> None:
    from dramatiq import Message

    from queue_ratelimit.integrations.due import due_tasks
    from queue_ratelimit.tasks import TICKET_HEADER, Ticket

    with dramatiq_rig(broker, redis_url, limit=100) as rig:
        due = due_tasks(rig.limiter, "dramatiq")
        assert due is not None

        def copy_of(message_id: str, token: str) -> Message[Any]:
            ticket = {TICKET_HEADER: Ticket(copy=token).dumps()}
            return Message(
                queue_name=dapp.NOTION,
                actor_name="tests.sync_notion",
                args=(1,),
                kwargs={},
                options=ticket,
                message_id=message_id,
            )

        # two copies of one message: its run published "new" (pending), then was killed
        # before its ack; "old" is a copy an earlier requeue replaced
        stale = copy_of("m-1", "old")
        assert due.park("m-1", None, "new", 0.0, None)
        rig.client.enqueue(stale)
        latest = rig.client.enqueue(copy_of("m-1", "new"))
        rig.start_worker([dapp.NOTION], threads=2)
        (value,) = rig.results_of([latest], timeout=30)
        assert isinstance(value, dict)
        wait_until(lambda: rig.waiting(dapp.NOTION) == 0, timeout=30)
        assert rig.upstream.served_once({"m-1"})  # the stale copy never ran
        assert not due.check("m-1", None) and due.check("m-1", "new")


def test_an_async_actor_runs_with_its_slot_and_a_backoff_in_it_requeues(stub: StubBroker) -> None:
    from dramatiq.middleware.asyncio import AsyncIO

    from queue_ratelimit import context

    stub.add_middleware(AsyncIO())
    stub.add_middleware(RateLimitMiddleware(Limiter(MemoryBackend(), {"svc": SVC})))
    seen: list[object] = []

    @dramatiq.actor(broker=stub, queue_name="svc", integration="svc", requeue_budget=0)
    async def calls(n: int) -> None:
        seen.append(context.prepaid.get())  # the slot the message acquired
        context.raise_rate_limited(RateLimited(0.01, "svc"))  # what the HTTP clients do

    calls.send(1)
    _run(stub, "svc")
    assert len(seen) == 1 and seen[0] is not None
    (dead,) = stub.dead_letters  # requeued (no budget left: failed typed), never retried
    assert isinstance(dead._exception, RequeueBudgetExhausted)
    assert dead.options.get("retries", 0) == 0


def test_a_spent_quota_ends_the_message_without_retries(stub: StubBroker) -> None:
    from queue_ratelimit import QuotaSpent

    runs: list[int] = []

    @dramatiq.actor(broker=stub, queue_name="svc", min_backoff=10)
    def early(n: int) -> None:  # declared before the middleware was added
        runs.append(n)
        raise QuotaSpent("svc", "insufficient_quota", 429)

    stub.add_middleware(RateLimitMiddleware(Limiter(MemoryBackend(), {"svc": SVC})))

    @dramatiq.actor(broker=stub, queue_name="svc", integration="svc", min_backoff=10)
    def calls(n: int) -> None:
        runs.append(n)
        raise QuotaSpent("svc", "insufficient_quota", 429)  # what the HTTP clients raise

    @dramatiq.actor(broker=stub, queue_name="svc", throws=(KeyError,), min_backoff=10)
    def plain(n: int) -> None:  # an actor with throws of its own, and no integration
        runs.append(n)
        raise QuotaSpent("svc", "insufficient_quota", 429)

    calls.send(1)
    plain.send(2)
    early.send(3)
    _run(stub, "svc")
    assert sorted(runs) == [1, 2, 3]  # once each: Retries retried none
    assert [type(dead._exception).__name__ for dead in stub.dead_letters] == ["QuotaSpent"] * 3
    assert plain.options["throws"] == (KeyError, QuotaSpent)  # the actor's own kept


@dataclass
class _Crowd:
    """A single-thread worker's two integrations: what ran, svc's waits, the requeues."""

    limiter: Limiter
    svc: Any
    other: Any
    done: list[str] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


@contextmanager
def _crowd(stub: StubBroker, other: Any) -> Iterator[_Crowd]:
    """svc in a cooldown its tasks sleep out in the worker (``cooldown_wait``) beside
    ``other``'s config, the signals counted while the block runs."""
    slow = SVC.replace(max_wait=0.5, cooldown_wait=30.0)
    limiter = Limiter(MemoryBackend(), {"svc": slow, "other": other})
    stub.add_middleware(RateLimitMiddleware(limiter))
    done: list[str] = []
    actors = [
        dramatiq.actor(broker=stub, actor_name=name[0], queue_name=name, integration=name)(
            done.append
        )
        for name in ("svc", "other")
    ]
    crowd = _Crowd(limiter, *actors, done=done)

    def acquired(sender: object, **fields: Any) -> None:
        if fields["integration"] == "svc":
            crowd.waits.append(fields["wait"])

    def requeued(sender: object, **fields: Any) -> None:
        crowd.reasons.append(f"{fields['integration']}:{fields['reason']}")

    signals.acquired.connect(acquired)
    signals.task_requeued.connect(requeued)
    try:
        yield crowd
    finally:
        signals.acquired.disconnect(acquired)
        signals.task_requeued.disconnect(requeued)


def test_a_task_sleeping_for_its_slot_gives_its_thread_to_another_integrations_message(
    stub: StubBroker,
) -> None:
    # a message of another queue that comes to wait behind svc's sleeper runs first
    with _crowd(stub, SVC) as crowd:
        crowd.limiter.on_backoff("svc", retry_after=3.0)
        crowd.svc.send("svc")
        worker = dramatiq.Worker(stub, worker_timeout=50, worker_threads=1)
        worker.start()
        try:
            wait_until(lambda: crowd.waits, timeout=10)  # the svc task sleeps out the cooldown
            assert crowd.waits[0] > 1.0
            crowd.other.send("other")
            wait_until(lambda: len(crowd.done) == 2, timeout=20)
            stub.join("svc", timeout=10_000)
            worker.join()
        finally:
            worker.stop()
    assert crowd.done == ["other", "svc"]  # without yielding: svc after its whole sleep, first
    assert crowd.reasons == ["svc:yielded"]
    assert stub.dead_letters == []


def test_a_sleeper_keeps_its_thread_from_an_integration_that_is_throttled_too(
    stub: StubBroker,
) -> None:
    # as above, but the other integration is in a cooldown of its own, which requeued its
    # first task: its next message could not run either, so giving way to it would only
    # trade places (and leave svc's slot unused)
    with _crowd(stub, SVC.replace(max_wait=0.5, cooldown_wait=0.0)) as crowd:
        crowd.limiter.on_backoff("svc", retry_after=2.0)
        crowd.limiter.on_backoff("other", retry_after=60.0)
        worker = dramatiq.Worker(stub, worker_timeout=50, worker_threads=1)
        worker.start()
        try:
            crowd.other.send("first")
            wait_until(lambda: crowd.reasons == ["other:cooldown"], timeout=10)  # held
            crowd.svc.send("svc")
            wait_until(lambda: crowd.waits, timeout=10)  # the svc task sleeps out its cooldown
            assert crowd.waits[0] > 1.0
            crowd.other.send("second")  # waits behind the sleeper, its integration held
            wait_until(lambda: crowd.done == ["svc"], timeout=20)
            wait_until(lambda: len(crowd.reasons) == 2, timeout=10)  # "second" meets its cooldown
        finally:
            worker.stop()
    assert crowd.reasons == ["other:cooldown", "other:cooldown"]  # svc never yielded


def test_only_another_integrations_message_with_every_thread_busy_counts_as_held_up(
    stub: StubBroker,
) -> None:
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

    from queue_ratelimit.integrations.dramatiq_crowd import LocalWork

    stub.add_middleware(RateLimitMiddleware(Limiter(MemoryBackend(), {"svc": SVC})))
    dramatiq.actor(broker=stub, actor_name="mine", queue_name="svc", integration="svc")(print)
    dramatiq.actor(broker=stub, actor_name="plain", queue_name="other")(print)
    worker = dramatiq.Worker(stub, worker_threads=2)  # not started: its queue filled by hand
    busy = [2]
    local = LocalWork(stub, worker, lambda: busy[0])

    def waiting(actor: str) -> None:
        message = Message(queue_name="q", actor_name=actor, args=(), kwargs={}, options={})
        order = worker.work_queue.qsize()  # (never two items of one priority to compare)
        worker.work_queue.put((order, MessageProxy(message)))  # Dramatiq 1.16-2.1's items

    assert not local.others_waiting("svc")  # nothing waits
    waiting("mine")
    assert not local.others_waiting("svc")  # its own integration's: left to max_sleepers
    waiting("plain")
    assert local.others_waiting("svc")  # an ungated actor's, both threads busy
    busy[0] = 1
    assert not local.others_waiting("svc")  # a free thread takes it


def test_a_message_of_an_integration_held_back_does_not_count_as_held_up(
    stub: StubBroker,
) -> None:
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

    from queue_ratelimit.integrations.dramatiq_crowd import HOLD_MOST, LocalWork

    configs = {"svc": SVC, "other": SVC}
    stub.add_middleware(RateLimitMiddleware(Limiter(MemoryBackend(), configs)))
    dramatiq.actor(broker=stub, actor_name="theirs", queue_name="other", integration="other")(print)
    worker = dramatiq.Worker(stub, worker_threads=1)  # not started: its queue filled by hand
    local = LocalWork(stub, worker, lambda: 1)
    message = Message(queue_name="q", actor_name="theirs", args=(), kwargs={}, options={})
    worker.work_queue.put((0, MessageProxy(message)))
    assert local.others_waiting("svc", 0.1)  # nothing holds "other" back: it could run
    local.hold("other", 30.0)  # a decision put one of its tasks 30 s ahead (held 5 s here)
    assert not local.others_waiting("svc", 0.1)
    local.hold("other", 0.0)  # an earlier time does not shorten the later one
    assert not local.others_waiting("svc", 0.1)
    assert local.others_waiting("svc", HOLD_MOST + 1.0)  # within what the caller may wait

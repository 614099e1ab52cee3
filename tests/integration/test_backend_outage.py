"""The limiter Redis goes away and comes back: nothing crashes, nothing is lost.

``on_backend_error="closed"`` grants nothing while Redis is down (tasks are requeued, never
failed); ``"open"`` decides on a local limiter at a share of the rate. Both return to the
shared state once Redis answers again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from queue_ratelimit import signals
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import BackendError, BackendUnavailable
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.outage import OutageGuard, local_plan
from queue_ratelimit.plans import Prepared, plan_for
from queue_ratelimit.tasks import Requeue, TaskCall, TaskGate, Ticket
from tests.conftest import FakeClock
from tests.integration.celery_harness import capp, celery_rig, wait_all
from tests.support import SVC, RedisProcess, answers, free_port, wait_until


@pytest.fixture
def outages() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def down(sender: object, **fields: Any) -> None:
        seen.append(("down", fields))

    def up(sender: object, **fields: Any) -> None:
        seen.append(("up", fields))

    signals.backend_unavailable.connect(down)
    signals.backend_recovered.connect(up)
    yield seen
    signals.backend_unavailable.disconnect(down)
    signals.backend_recovered.disconnect(up)


def _limiter(url: str, mode: str, prefix: str = "qrl-outage") -> Limiter:
    config = SVC.replace(on_backend_error=mode, fallback_processes=4, max_wait=5.0)
    return Limiter(RedisBackend(url, prefix=prefix), {"svc": config}, probe_interval=0.05)


Facade = Callable[[Limiter], Any]  # the ``facade`` fixture: the limiter, or an async one


def test_fail_closed_refuses_without_raising_elsewhere_and_recovers(
    private_redis: RedisProcess, outages: list[tuple[str, dict[str, Any]]], facade: Facade
) -> None:
    server = private_redis.start()
    limiter = facade(_limiter(server.url, "closed"))
    assert limiter.acquire("svc").granted
    server.stop()
    with pytest.raises(BackendUnavailable) as caught:
        limiter.acquire("svc")
    assert caught.value.retry_after == pytest.approx(0.05)
    limiter.on_success("svc")  # a call already made: its report is dropped, not raised
    limiter.count("svc", "requeues")
    assert not limiter.release("svc", None, "lease-1")
    with pytest.raises(BackendUnavailable):
        limiter.acquire("svc")
    assert [kind for kind, _ in outages] == ["down"]  # one event per outage, not per call
    assert outages[0][1]["mode"] == "closed"
    assert "ConnectionError" in outages[0][1]["error"]
    assert server.url not in outages[0][1]["error"]

    server.start()  # every key lost, as after a restart without persistence
    wait_until(lambda: answers(limiter), timeout=10)
    assert [kind for kind, _ in outages] == ["down", "up"]
    state_key = RedisBackend(server.url, prefix="qrl-outage").keys_for("svc", None)[0]
    assert redis.Redis.from_url(server.url).exists(state_key)  # shared state again


def test_fail_open_decides_locally_at_a_share_of_the_rate(
    private_redis: RedisProcess, outages: list[tuple[str, dict[str, Any]]], facade: Facade
) -> None:
    limiter = facade(_limiter(private_redis.url, "open"))  # Redis unreachable from the start
    first = limiter.acquire("svc")
    second = limiter.acquire("svc")
    assert first.granted and second.granted  # local decisions: work goes on
    assert second.wait > 0  # and they are paced
    shared = plan_for(limiter.config("svc"))
    assert [lim.rate for lim in local_plan(shared, 4).limits] == [SVC.rate_limit_per_sec / 4]
    limiter.on_backoff("svc", retry_after=1.0)  # applied to the local limiter, no raise
    assert [(kind, fields["mode"]) for kind, fields in outages] == [("down", "open")]

    server = private_redis.start()
    wait_until(lambda: answers(limiter) and [k for k, _ in outages] == ["down", "up"], 10)
    backend = RedisBackend(server.url, prefix="qrl-outage")
    assert redis.Redis.from_url(server.url).exists(backend.keys_for("svc", None)[0])


def test_a_task_gate_failing_closed_requeues_without_spending_the_budget() -> None:
    config = IntegrationConfig(name="svc", on_backend_error="closed", requeue_budget=0)
    limiter = Limiter(
        RedisBackend(f"redis://127.0.0.1:{free_port()}/0"), {"svc": config}, probe_interval=1.0
    )
    gate = TaskGate(limiter, rng=lambda: 0.5)
    verdict = gate.before(TaskCall("svc"), Ticket())
    assert isinstance(verdict, Requeue)
    assert verdict.reason == "backend_unavailable"
    assert verdict.countdown == pytest.approx(1.5)
    assert verdict.ticket == Ticket()  # a budget of 0 is not spent on an outage


@pytest.mark.faults
@pytest.mark.parametrize("mode", ["closed", "open"])
def test_celery_tasks_survive_redis_down_at_start_and_restarted_mid_run(
    mode: str, redis_url: str, private_redis: RedisProcess
) -> None:
    events = f"{capp.PREFIX}:events"
    records = redis.Redis.from_url(redis_url)
    records.delete(events, f"{capp.PREFIX}:failures")
    private_redis.durable = True  # it holds requeued tasks: as durable as a broker
    with celery_rig("redis", redis_url, limit=100) as rig:
        rig.start_worker(
            "w1",
            [capp.NOTION],
            concurrency=2,
            QRL_REDIS=private_redis.url,  # not started yet: unreachable at worker start
            QRL_ON_BACKEND_ERROR=mode,
        )
        ids = [rig.send("tests.sync_notion", [i], capp.NOTION) for i in range(40)]
        wait_until(lambda: mode.encode() in records.lrange(events, 0, -1), timeout=30)
        private_redis.start()
        results = rig.results(ids)
        wait_until(lambda: sum(r.ready() for r in results) >= 10, timeout=60, every=0.1)
        private_redis.stop()  # a restart mid-run (its AOF keeps the tasks parked in it)
        records.delete(events)
        wait_until(lambda: mode.encode() in records.lrange(events, 0, -1), timeout=30)
        private_redis.start()
        values = wait_all(results, timeout=120)
        assert all(isinstance(v, dict) for v in values), [
            v for v in values if not isinstance(v, dict)
        ][:3]
        assert rig.upstream.served_once(set(ids))
        assert {v["retries"] for v in values} == {0}
        assert not records.lrange(f"{capp.PREFIX}:failures", 0, -1)
        seen = set(records.lrange(events, 0, -1))
        assert b"recovered" in seen
        if mode == "closed":
            assert b"backend_unavailable" in seen  # requeued, not failed


class _Flaky(MemoryBackend):
    """A real memory backend whose calls fail (as Redis's would) while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    def count(self, integration: str, event: str) -> None:
        self.calls += 1
        if self.down:
            raise BackendError("redis count failed: Connection refused")
        super().count(integration, event)


def test_one_caller_per_interval_probes_and_a_call_from_before_the_outage_proves_nothing(
    clock: FakeClock, outages: list[tuple[str, dict[str, Any]]]
) -> None:
    flaky = _Flaky()
    guard = OutageGuard(flaky, probe_interval=1.0, clock=clock)
    config = SVC.replace(on_backend_error="closed")
    plan = plan_for(config)
    prepared = Prepared(config, plan, {lim.name: lim.burst for lim in plan.limits})

    def count(backend: Any, _plan: Any) -> None:
        backend.count("svc", "requeues")

    def slow_success(backend: Any, _plan: Any) -> None:  # the outage begins while it runs
        clock.advance(0.05)
        flaky.down = True
        tried = flaky.calls
        guard.call(prepared, None, count, closed=lambda _e: None)  # fails meanwhile
        assert flaky.calls == tried + 1  # one attempt: a failure is not retried at once
        clock.advance(0.05)

    guard.call(prepared, None, slow_success)  # answered, but it started before
    assert guard.down and [kind for kind, _ in outages] == ["down"]
    before = flaky.calls
    guard.call(prepared, None, count, closed=lambda _e: None)
    assert flaky.calls == before  # within the interval: Redis is left alone
    clock.advance(1.0)
    for _ in range(3):
        guard.call(prepared, None, count, closed=lambda _e: None)
    assert flaky.calls == before + 1  # one probe, not three
    flaky.down = False
    clock.advance(1.0)
    guard.call(prepared, None, count)
    assert not guard.down and [kind for kind, _ in outages] == ["down", "up"]


def test_a_lease_given_back_during_an_outage_is_released_when_redis_returns(
    private_redis: RedisProcess, facade: Facade
) -> None:
    server = private_redis.start()
    config = SVC.replace(max_concurrent=1, lease_ttl=300.0, max_wait=5.0)
    limiter = facade(
        Limiter(RedisBackend(server.url, prefix="qrl-lease"), {"svc": config}, probe_interval=0.05)
    )
    held = limiter.acquire("svc")
    assert held.granted and held.lease is not None
    server.stop()
    limiter.on_success("svc", lease=held.lease)  # dropped for now, not forgotten
    server.start()  # every key lost, as after a restart: rebuild the lease by hand
    backend = RedisBackend(server.url, prefix="qrl-lease")
    leases_key = backend.keys_for("svc", None)[1]
    backend.client.zadd(leases_key, {held.lease: 4_000_000_000})
    wait_until(lambda: answers(limiter), timeout=10)  # recovered (an acquire first refused)
    assert backend.client.zscore(leases_key, held.lease) is None  # released on recovery


def test_a_fixed_windows_units_are_shared_out_among_the_fallback_processes() -> None:
    from queue_ratelimit import LimitConfig

    config = SVC.replace(limits=(LimitConfig.per_window("day", 1000, 86_400.0),))
    local = local_plan(plan_for(config), 4)
    assert [lim.burst for lim in local.limits] == [SVC.burst_size, 250.0]  # a bucket's is kept

"""RateLimitedTask on real Celery workers and real brokers, against a hidden-limit upstream."""

from __future__ import annotations

import logging

import pytest
import redis

from queue_ratelimit.errors import RequeueBudgetExhausted
from queue_ratelimit.integrations.celery_due import scope
from tests.integration.celery_harness import capp, celery_rig, wait_all
from tests.support import wait_until

BROKERS = ["redis", "rabbitmq"]


@pytest.mark.parametrize("broker", BROKERS)
def test_200_tasks_two_workers_each_runs_once_without_long_sleeps_or_retries(
    broker: str, redis_url: str
) -> None:
    with celery_rig(broker, redis_url, limit=10, window=1.0, headers="retry-after") as rig:
        rig.start_worker("w1", [capp.NOTION, capp.GITHUB], concurrency=4)
        rig.start_worker("w2", [capp.NOTION, capp.GITHUB], concurrency=4)
        ids = [rig.send("tests.sync_notion", [i], capp.NOTION) for i in range(100)]
        ids += [rig.send("tests.sync_repo", [i], capp.GITHUB) for i in range(100)]
        values = wait_all(rig.results(ids), timeout=240)
        assert all(isinstance(v, dict) for v in values), [
            v for v in values if not isinstance(v, dict)
        ][:3]
        assert rig.upstream.served_once(set(ids))  # counted by the upstream, by task id
        assert {v["retries"] for v in values} == {0}  # rate limits never spent a retry
        waits = [
            float(w) for w in redis.Redis.from_url(redis_url).lrange(f"{capp.PREFIX}:waits", 0, -1)
        ]
        assert len(waits) >= 200
        # max_wait in line, plus up to cooldown_wait (unset: max_wait) of a cooldown
        assert max(waits) <= 2 * capp.COMMON["max_wait"] + 1e-6


@pytest.mark.parametrize("broker", BROKERS)
def test_an_exhausted_requeue_budget_fails_visibly(broker: str, redis_url: str) -> None:
    with celery_rig(broker, redis_url, limit=100) as rig:
        rig.start_worker("w1", [capp.NOTION], concurrency=2, QRL_BUDGET="3")
        (result,) = rig.results([rig.send("tests.explicit", [], capp.NOTION)])
        (value,) = wait_all([result], timeout=60)
        assert isinstance(value, RequeueBudgetExhausted)
        assert result.state == "FAILURE"
        assert "requeued 3 times" in str(value)
        failures = redis.Redis.from_url(redis_url).lrange(f"{capp.PREFIX}:failures", 0, -1)
        assert f"{result.id} RequeueBudgetExhausted".encode() in failures  # task_failure fired


@pytest.mark.parametrize("broker", BROKERS)
def test_a_cooling_integration_does_not_block_another_on_the_same_worker(
    broker: str, redis_url: str
) -> None:
    with celery_rig(broker, redis_url, limit=100) as rig:
        rig.limiter.on_backoff(capp.NOTION, retry_after=60.0)  # notion: a 60 s cooldown
        rig.start_worker("w1", [capp.NOTION, capp.GITHUB], concurrency=1)
        notion = [rig.send("tests.sync_notion", [i], capp.NOTION) for i in range(20)]
        github = [rig.send("tests.sync_repo", [i], capp.GITHUB) for i in range(20)]
        values = wait_all(rig.results(github), timeout=45)
        assert all(isinstance(v, dict) for v in values)
        assert rig.upstream.count(200) == 20  # only github reached the upstream
        assert {r.state for r in rig.results(notion)} <= {"PENDING", "RETRY"}


@pytest.mark.parametrize("broker", BROKERS)
def test_consecutive_5xx_pause_the_queue_until_a_probe_succeeds(
    broker: str, redis_url: str
) -> None:
    with celery_rig(broker, redis_url, limit=100) as rig:
        node = rig.start_worker("w1", [capp.NOTION, capp.GITHUB], concurrency=2)
        rig.upstream.fail_with(500)
        failing = [rig.send("tests.sync_notion", [i], capp.NOTION) for i in range(5)]
        wait_all(rig.results(failing), timeout=60)
        assert rig.limiter.snapshot(capp.NOTION).breaker == "open"
        wait_until(lambda: capp.NOTION not in rig.active_queues(node), timeout=10)
        assert capp.GITHUB in rig.active_queues(node)  # only the broken integration pauses
        rig.upstream.fail_with(None)
        held = [rig.send("tests.sync_notion", [i], capp.NOTION) for i in range(5)]
        assert rig.waiting(capp.NOTION) == 5  # safe in the broker while the breaker is open
        wait_until(lambda: capp.NOTION in rig.active_queues(node), timeout=30)
        values = wait_all(rig.results(held), timeout=60)
        assert all(isinstance(v, dict) for v in values)
        assert rig.limiter.snapshot(capp.NOTION).breaker == "closed"
        assert rig.upstream.served_once(set(held))


@pytest.mark.parametrize("broker", BROKERS)
def test_a_worker_killed_mid_task_loses_nothing(broker: str, redis_url: str) -> None:
    with celery_rig(broker, redis_url, visibility_timeout=6, limit=100) as rig:
        doomed = rig.start_worker("w1", [capp.NOTION], concurrency=4)
        ids = [rig.send("tests.slow", [1.5], capp.NOTION) for _ in range(30)]
        wait_until(lambda: rig.upstream.count(200) >= 3, timeout=30)  # w1 is mid-task
        rig.kill(doomed)
        if broker == "redis":  # the broker hands a dead worker's unacked tasks on only
            # once its visibility timeout has passed, when a worker starts
            wait_until(lambda: rig.held_longer_than(6.0), timeout=30, every=0.1)
        rig.start_worker("w2", [capp.NOTION], concurrency=4)
        values = wait_all(rig.results(ids), timeout=120)
        assert values == ids  # every task completed
        assert set(rig.upstream.served) == set(ids)


def test_a_countdown_beyond_the_visibility_timeout_waits_in_redis_and_runs_once(
    redis_url: str,
) -> None:
    with celery_rig("redis", redis_url, visibility_timeout=4, limit=100) as rig:
        rig.limiter.on_backoff(capp.NOTION, retry_after=12.0)  # requeued for ~12 s
        w1 = rig.start_worker("w1", [capp.NOTION], concurrency=2)
        (task_id,) = ids = [rig.send("tests.sync_notion", [1], capp.NOTION)]
        wait_until(lambda: rig.results(ids)[0].state == "RETRY", timeout=30)
        # it waits in the limiter's Redis, not in the broker: no delivery is held unacked
        # (a worker starting past the visibility timeout would take it back and run it
        # twice) and no ETA message sits in a worker's memory
        due = redis.Redis.from_url(redis_url)
        key = f"{{{capp.PREFIX}:tasks:{scope(rig.client)}}}:due"
        wait_until(lambda: due.zcard(key) == 1 and not rig.held(), timeout=30)
        assert rig.waiting(capp.NOTION) == 0
        w2 = rig.start_worker("w2", [capp.NOTION], concurrency=2)
        (value,) = wait_all(rig.results(ids), timeout=60)
        assert isinstance(value, dict)
        wait_until(lambda: rig.idle([w1, w2], [capp.NOTION]), timeout=30)  # nothing left to run
        assert rig.upstream.served_once({task_id})
        assert due.zcard(key) == 0


def test_a_revoked_parked_task_never_runs_and_leaves_the_due_set(redis_url: str) -> None:
    with celery_rig("redis", redis_url, limit=100) as rig:
        rig.limiter.on_backoff(capp.NOTION, retry_after=4.0)  # parked for ~4 s
        w1 = rig.start_worker("w1", [capp.NOTION], concurrency=2)
        (task_id,) = ids = [rig.send("tests.sync_notion", [1], capp.NOTION)]
        due = redis.Redis.from_url(redis_url)
        key = f"{{{capp.PREFIX}:tasks:{scope(rig.client)}}}:due"
        wait_until(lambda: due.zcard(key) == 1, timeout=30)
        rig.client.control.revoke(task_id)
        # its copy is promoted when due, reaches the worker, which refuses it as revoked
        # (task_revoked): the due set lets it go instead of publishing it again and again
        wait_until(lambda: rig.results(ids)[0].state == "REVOKED", timeout=30)
        wait_until(lambda: due.zcard(key) == 0, timeout=10)
        wait_until(lambda: rig.idle([w1], [capp.NOTION]), timeout=30)
        assert rig.upstream.count(200) == 0


def test_a_body_catching_exception_cannot_swallow_a_requeue(redis_url: str) -> None:
    with celery_rig("redis", redis_url, limit=1, window=30.0) as rig:
        rig.start_worker("w1", [capp.NOTION], concurrency=2)
        ids = [rig.send("tests.swallowing", [], capp.NOTION) for _ in range(2)]
        wait_until(lambda: rig.upstream.count(429) >= 1, timeout=30)
        wait_until(
            lambda: sorted(r.state for r in rig.results(ids)) == ["RETRY", "SUCCESS"], timeout=30
        )
        done = next(r for r in rig.results(ids) if r.state == "SUCCESS")
        assert done.get(timeout=5) == "ok"  # and the other was requeued, not "swallowed"


def test_a_tasks_cost_is_a_method_a_value_or_a_function_of_its_arguments() -> None:
    from celery import Celery

    from queue_ratelimit.integrations.celery import RateLimitedTask

    app = Celery("costs")

    @app.task(base=RateLimitedTask, integration="openai", cost=lambda p: {"tokens": len(p)})
    def summarise(prompt: str) -> str:
        return prompt

    @app.task(base=RateLimitedTask, integration="openai", cost={"tokens": 7.0})
    def fixed(prompt: str) -> str:
        return prompt

    class Embed(RateLimitedTask):
        integration = "openai"

        def cost(self, n: int) -> dict[str, float]:
            return {"tokens": 2.0 * n}

    class Plain(RateLimitedTask):
        integration = "openai"

    def cost(task: RateLimitedTask, *args: object) -> object:
        return task.limits.call(args, {}).cost

    assert cost(summarise, "abcd") == {"tokens": 4}
    assert cost(fixed, "x") == {"tokens": 7.0}
    assert cost(Embed(), 5) == {"tokens": 10.0}
    assert cost(Plain()) == 1.0  # one request by default


def test_a_task_with_an_impossible_cost_fails_the_check_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from celery import Celery

    from queue_ratelimit import ConfigError
    from queue_ratelimit.integrations.celery import RateLimitedTask, check_tasks

    app = Celery("checks")

    @app.task(base=RateLimitedTask, integration="openai", cost={"tokens": 1e12}, shared=False)
    def huge(prompt: str) -> str:
        return prompt

    with pytest.raises(ConfigError, match="cost") as caught:
        check_tasks(app)
    assert "huge" in str(caught.value)
    app.tasks.pop(huge.name)

    @app.task(base=RateLimitedTask, integration="no-such-api", shared=False)
    def lost() -> None: ...

    # an unknown integration is only logged: it may be another app's task. The logger's own
    # level, because a Celery worker started in-process raises the root logger's
    with caplog.at_level(logging.WARNING, logger="queue_ratelimit.integrations.celery"):
        check_tasks(app)
    assert "no-such-api" in caplog.text

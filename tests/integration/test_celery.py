"""RateLimitedTask on real Celery workers and real brokers, against a hidden-limit upstream."""

from __future__ import annotations

import pytest
import redis

from queue_ratelimit.errors import RequeueBudgetExhausted
from tests.integration.celery_harness import capp, celery_rig, wait_all

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
        assert max(waits) <= capp.COMMON["max_wait"] + 1e-6


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

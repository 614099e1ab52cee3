"""The limiter's state in PostgreSQL, with real workers: the exactly-once scenario on Celery,
Dramatiq and RQ (four worker processes each, 200 tasks against a hidden-limit upstream:
every task runs, once; the limit is met and absorbed by requeues, not framework retries;
on Celery again with each worker claiming its next slots ahead, ``claim_ahead``),
and the database restarted under a running Celery worker (nothing lost, the outage policy
holds, the worker recovers by itself)."""

from __future__ import annotations

import pytest
import redis

from tests.integration.celery_harness import capp, celery_rig, wait_all
from tests.integration.rigs import completed, open_rig
from tests.postgres_server import PostgresProcess
from tests.support import wait_until

pytestmark = pytest.mark.redis  # (the brokers' records and results live in Redis)


@pytest.mark.parametrize(
    "name, claims",
    [
        ("celery-rabbitmq", ""),
        ("dramatiq-rabbitmq", ""),
        ("rq-fork", ""),
        ("celery-rabbitmq", "?claim_ahead=1"),  # each worker claiming its next slots
    ],
)
def test_200_tasks_on_four_workers_run_once_with_the_limiter_on_postgres(
    name: str, claims: str, redis_url: str, postgres_url: str
) -> None:
    url = postgres_url + claims
    with open_rig(name, redis_url, limiter_url=url, limit=10, window=1.0) as rig:
        for _ in range(4):
            rig.start_worker([rig.notion, rig.github], concurrency=1)
        ids = [rig.send("notion", rig.notion, i) for i in range(100)]
        ids += [rig.send("github", rig.github, i) for i in range(100)]
        values = rig.wait_all(ids, timeout=150)
        assert completed(values), [v for v in values if not isinstance(v, dict)][:3]
        assert rig.upstream.served_once(set(ids))  # counted by the upstream, by task id
        assert set(rig.retries(ids)) == {0}  # rate limits never spent a framework retry
        assert set(rig.requeued()) <= set(ids)  # each requeue named its task
        assert rig.limiter.backend.describe().startswith("postgresql")  # type: ignore[attr-defined]
        snapshot = rig.limiter.snapshot(rig.notion)
        assert snapshot.exists  # the workers' decisions are in the database


@pytest.mark.faults
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["closed", "open"])
def test_celery_tasks_survive_postgres_restarted_mid_run(
    mode: str, redis_url: str, private_postgres: PostgresProcess
) -> None:
    events = f"{capp.PREFIX}:events"
    records = redis.Redis.from_url(redis_url)
    records.delete(events, f"{capp.PREFIX}:failures")
    with celery_rig("rabbitmq", redis_url, limiter_url=private_postgres.url, limit=100) as rig:
        rig.start_worker("w1", [capp.NOTION], concurrency=2, QRL_ON_BACKEND_ERROR=mode)
        ids = [rig.send("tests.sync_notion", [i], capp.NOTION) for i in range(40)]
        results = rig.results(ids)
        wait_until(lambda: sum(r.ready() for r in results) >= 10, timeout=60, every=0.1)
        private_postgres.stop()  # a restart mid-run: the workers' connections break
        wait_until(lambda: mode.encode() in records.lrange(events, 0, -1), timeout=30)
        private_postgres.start()
        values = wait_all(results, timeout=120)
        assert all(isinstance(v, dict) for v in values), [
            v for v in values if not isinstance(v, dict)
        ][:3]
        assert rig.upstream.served_once(set(ids))  # none lost, none run twice
        assert {v["retries"] for v in values} == {0}
        assert not records.lrange(f"{capp.PREFIX}:failures", 0, -1)
        seen = set(records.lrange(events, 0, -1))
        assert b"recovered" in seen  # the same worker, back on the database
        if mode == "closed":
            assert b"backend_unavailable" in seen  # requeued, not failed

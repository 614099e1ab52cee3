"""The limiter on a real Sentinel-managed master and replica: decisions follow a failover and
the learned rate survives it; Celery workers run on cluster and sentinel URLs."""

from __future__ import annotations

import pytest

from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import BackendUnavailable
from queue_ratelimit.limiter import Limiter
from tests.deployments import ClusterProcesses, SentinelGroup
from tests.integration.celery_harness import capp, celery_rig, wait_all
from tests.support import new_prefix, wait_until

pytestmark = pytest.mark.redis


def test_a_master_killed_fails_over_and_decisions_resume_with_the_learned_rate(
    private_sentinel: SentinelGroup,
) -> None:
    prefix = new_prefix()
    config = IntegrationConfig(name="svc", rate_limit_per_sec=5.0, max_rate=100.0)
    limiter = Limiter(RedisBackend(private_sentinel.url, prefix=prefix), {"svc": config})
    for _ in range(20):
        limiter.on_success("svc", "ws-1")  # additive increase from 5/s
    learned = limiter.snapshot("svc", "ws-1").limit().rate
    assert learned > 6.0
    private_sentinel.wait_for_replica()  # the replica has it
    old = private_sentinel.kill_master()
    private_sentinel.wait_for_failover(old)

    def granted() -> bool:
        try:
            return limiter.acquire("svc", "ws-1").granted
        except BackendUnavailable:
            return False  # the outage policy while the replica is promoted

    wait_until(granted, timeout=30, every=0.2)
    after = limiter.snapshot("svc", "ws-1")
    with private_sentinel.client() as master:  # what the promoted replica holds, if it fails
        held = (master.info("replication").get("role"), master.dbsize(), after.exists)
    assert after.limit().rate == pytest.approx(learned), held


@pytest.mark.parametrize("deployment", ["cluster", "sentinel"])
def test_a_celery_worker_on_a_cluster_or_sentinel_url_runs_100_tasks_once(
    request: pytest.FixtureRequest, redis_url: str, deployment: str
) -> None:
    fixture = "redis_cluster" if deployment == "cluster" else "redis_sentinel"
    where: ClusterProcesses | SentinelGroup = request.getfixturevalue(fixture)
    with celery_rig("redis", redis_url, limiter_url=where.url, limit=50) as rig:
        worker = rig.start_worker("w1", [capp.NOTION], concurrency=4)
        results = [rig.send("tests.counted", [n], capp.NOTION) for n in range(100)]
        values = wait_all(rig.results(results), timeout=120)
        assert all(isinstance(v, dict) for v in values), values[:3]
        assert rig.upstream.served_once(set(results))
        backend = rig.limiter.backend
        assert isinstance(backend, RedisBackend)
        assert list(backend.scan(capp.NOTION))  # the workers' keys are on the deployment
        # and the worker says so at start: the sentinels' URL, or every master of the cluster
        start = next(
            line for line in rig.log_of(worker, whole=True).splitlines() if "limiter on" in line
        )
        if isinstance(where, SentinelGroup):
            assert f"limiter on {where.url} " in start
        else:
            assert "limiter on redis+cluster://" in start
            assert all(f"127.0.0.1:{port}" in start for port in where.ports), start

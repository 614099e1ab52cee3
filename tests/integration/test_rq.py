"""rate_limited jobs on real RQ workers (forking and simple), against a hidden-limit upstream:
what is RQ's own (the scenarios every framework shares: test_scenarios.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import redis
from rq.registry import ScheduledJobRegistry

from queue_ratelimit.integrations.rq_due import due_key
from tests.integration.rq_harness import jobs, rq_rig
from tests.support import refused_at_start, wait_until

KINDS = ["fork", "simple"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_backlog_is_paced_by_reservations_each_redeemed_once(kind: str, redis_url: str) -> None:
    slow = {  # 2 calls/s, and no wait in the worker beyond 0.1 s
        f"QUEUE_RATELIMIT__{jobs.NOTION.upper()}__{field}": value
        for field, value in [("RATE_LIMIT_PER_SEC", "2"), ("MAX_RATE", "2"), ("MAX_WAIT", "0.1")]
    }
    with rq_rig(kind, redis_url, limit=100) as rig:
        rig.start_worker([jobs.NOTION], **slow)
        ids = [rig.enqueue(jobs.NOTION, jobs.sync_notion, i).id for i in range(12)]
        wait_until(lambda: rig.all_done(ids), timeout=45, every=0.1)
        assert set(rig.statuses(ids)) == {"finished"}
        assert rig.upstream.served_once(set(ids))
        requeues = [line.split() for line in rig.records("requeues")]
        assert {reason for _, reason in requeues} == {"rate"}  # sent back with a reserved slot
        assert len(requeues) >= 8  # the backlog went to the scheduler, not to sleep
        assert len({job_id for job_id, _ in requeues}) == len(requeues)  # each came back once


@pytest.mark.parametrize("kind", KINDS)
def test_requeued_jobs_come_back_through_the_worker_without_rqs_scheduler(
    kind: str, redis_url: str
) -> None:
    slow = {  # 4 calls/s, and no wait in the worker beyond 0.05 s: most jobs are requeued
        f"QUEUE_RATELIMIT__{jobs.NOTION.upper()}__{field}": value
        for field, value in [("RATE_LIMIT_PER_SEC", "4"), ("MAX_RATE", "4"), ("MAX_WAIT", "0.05")]
    }
    with rq_rig(kind, redis_url, limit=100) as rig:
        rig.start_worker([jobs.NOTION], scheduler=False, **slow)
        ids = [rig.enqueue(jobs.NOTION, jobs.sync_notion, i).id for i in range(12)]
        wait_until(lambda: rig.all_done(ids), timeout=45, every=0.1)
        assert set(rig.statuses(ids)) == {"finished"}
        assert rig.upstream.served_once(set(ids))
        requeued = {line.split()[0] for line in rig.records("requeues")}
        assert len(requeued) >= 8  # these came back with no RQ scheduler running
        assert ScheduledJobRegistry(jobs.NOTION, connection=rig.connection).count == 0
        assert rig.connection.zcard(due_key(rig.queue(jobs.NOTION))) == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QUEUE_RATELIMIT_POLL", "soon"),
        ("QUEUE_RATELIMIT_REDIS_URL", "http://127.0.0.1:6379"),
        (f"QUEUE_RATELIMIT__{jobs.NOTION.upper()}__DECREASE_FACTOR", "1.5"),
    ],
    ids=["poll", "redis-url", "decrease-factor"],  # stable across test processes
)
def test_an_invalid_setting_stops_the_worker_at_start(
    variable: str, value: str, redis_url: str
) -> None:
    with rq_rig("simple", redis_url, limit=100) as rig:
        proc = rig.spawn([jobs.NOTION], "qrl-misconfigured", **{variable: value})
        assert proc.wait(timeout=30) != 0
        log = rig.log_of("qrl-misconfigured")
        assert "ConfigError" in log
        assert (variable if "__" not in variable else "decrease_factor") in log


def test_the_forking_worker_refuses_a_local_fallback_it_could_not_keep(redis_url: str) -> None:
    from queue_ratelimit import ConfigError, IntegrationConfig, Limiter, MemoryBackend
    from queue_ratelimit.integrations.rq import RateLimitedSimpleWorker, RateLimitedWorker

    config = IntegrationConfig(name="svc", on_backend_error="open", fallback_processes=4)
    limiter = Limiter(MemoryBackend(), {"svc": config})
    connection = redis.Redis.from_url(redis_url)
    with pytest.raises(ConfigError, match="on_backend_error"):
        RateLimitedWorker(["svc"], connection=connection, limiter=limiter)
    RateLimitedSimpleWorker(["svc"], connection=connection, limiter=limiter)  # one process


def test_a_worker_whose_limiter_cannot_reach_redis_says_so_once_and_keeps_its_queues(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from queue_ratelimit import IntegrationConfig, Limiter
    from queue_ratelimit.backends.redis import RedisBackend
    from queue_ratelimit.integrations.rq import RateLimitedSimpleWorker
    from tests.support import free_port

    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    limiter = Limiter(backend, {"svc": IntegrationConfig(name="svc")}, probe_interval=0.01)
    worker = RateLimitedSimpleWorker(
        ["svc"], connection=redis.Redis.from_url(redis_url), limiter=limiter
    )
    worker._paused = frozenset({"svc"})  # its breaker was open when Redis went away
    caplog.set_level(logging.WARNING)
    for _ in range(4):
        worker._next_check = 0.0  # every call is a poll
        assert worker._paused_queues() == frozenset({"svc"})  # kept as it was
    said = [r for r in caplog.records if "breaker check" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None


def test_a_worker_whose_job_names_an_unknown_integration_stops_at_start_with_one_line(
    tmp_path: Path, redis_url: str
) -> None:
    (tmp_path / "typo_jobs.py").write_text(
        "from queue_ratelimit.integrations.rq import rate_limited\n"
        "@rate_limited('notoin')\n"
        "def sync_page():\n"
        "    pass\n",
        encoding="utf-8",
    )
    (tmp_path / "typo_settings.py").write_text("import typo_jobs  # noqa: F401\n", "utf-8")
    worker = "queue_ratelimit.integrations.rq.RateLimitedSimpleWorker"
    command = [sys.executable, "-m", "rq.cli", "worker", "-w", worker, "-c", "typo_settings"]
    command += ["--url", redis_url, "--burst", "qrl-typo"]
    refused_at_start(command, tmp_path, "typo_jobs.sync_page", QUEUE_RATELIMIT_REDIS_URL=redis_url)

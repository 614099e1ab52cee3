"""rate_limited jobs on real RQ workers (forking and simple), against a hidden-limit upstream."""

from __future__ import annotations

import time

import pytest
import redis
from rq import Retry
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from rq.results import Result

from queue_ratelimit.integrations.rq_due import due_key
from queue_ratelimit.tasks import TICKET_HEADER
from tests.integration.rq_harness import jobs, rq_rig
from tests.support import wait_until

KINDS = ["fork", "simple"]


@pytest.mark.parametrize("kind", KINDS)
def test_200_jobs_two_workers_each_runs_once_without_long_sleeps_or_retries(
    kind: str, redis_url: str
) -> None:
    with rq_rig(kind, redis_url, limit=10, window=1.0, headers="retry-after") as rig:
        rig.start_worker([jobs.NOTION, jobs.GITHUB])
        rig.start_worker([jobs.NOTION, jobs.GITHUB])
        ids = [
            rig.enqueue(jobs.NOTION, jobs.sync_notion, i, retry=Retry(max=2)).id for i in range(100)
        ]
        ids += [
            rig.enqueue(jobs.GITHUB, jobs.sync_repo, "acme", i, retry=Retry(max=2)).id
            for i in range(100)
        ]
        wait_until(lambda: rig.all_done(ids), timeout=100, every=0.2)
        assert set(rig.statuses(ids)) == {"finished"}
        assert rig.upstream.served_once(set(ids))  # counted by the upstream, by job id
        requeued = {line.split()[0] for line in rig.records("requeues")}
        assert requeued  # the hidden limit was met: jobs went back to the scheduler
        assert requeued <= set(ids)  # each requeue signal named its job
        for job in rig.fetch(ids):  # ... without spending RQ's Retry budget
            assert (job.retries_left, job.number_of_retries) == (2, None), job.id
            assert [r.type for r in job.results()] == [Result.Type.SUCCESSFUL], job.id
        waits = [line.split() for line in rig.records("waits")]
        assert len(waits) >= 200
        # max_wait in line, plus up to cooldown_wait (unset: max_wait) of a cooldown
        assert max(float(wait) for _, _, wait in waits) <= 2 * jobs.COMMON["max_wait"] + 1e-6
        assert {name for name, _, _ in waits} == {
            "tests.integration.rq_jobs.sync_notion",
            "tests.integration.rq_jobs.sync_repo",
        }
        assert {job_id for _, job_id, _ in waits} == set(ids)


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


@pytest.mark.parametrize("kind", KINDS)
def test_a_cooling_integration_does_not_block_another_on_the_same_worker(
    kind: str, redis_url: str
) -> None:
    with rq_rig(kind, redis_url, limit=100) as rig:
        rig.limiter.on_backoff(jobs.NOTION, retry_after=60.0)  # notion: a 60 s cooldown
        rig.start_worker([jobs.NOTION, jobs.GITHUB])
        notion = [rig.enqueue(jobs.NOTION, jobs.sync_notion, i).id for i in range(20)]
        github = [rig.enqueue(jobs.GITHUB, jobs.sync_repo, "acme", i).id for i in range(20)]
        wait_until(lambda: rig.all_done(github), timeout=45, every=0.1)
        assert set(rig.statuses(github)) == {"finished"}
        assert rig.upstream.count(200) == 20  # only github reached the upstream
        assert set(rig.statuses(notion)) == {"scheduled"}  # the same jobs, for later
        scheduled = ScheduledJobRegistry(jobs.NOTION, connection=rig.connection)
        assert set(scheduled.get_job_ids()) == set(notion)
        soonest = min(scheduled.get_scheduled_time(job_id) for job_id in notion)
        assert soonest.timestamp() > time.time() + 45


@pytest.mark.parametrize("kind", KINDS)
def test_an_exhausted_requeue_budget_fails_visibly(kind: str, redis_url: str) -> None:
    with rq_rig(kind, redis_url, limit=100) as rig:
        rig.start_worker([jobs.NOTION])
        job_id = rig.enqueue(jobs.NOTION, jobs.always_throttled, retry=Retry(max=2)).id
        wait_until(lambda: rig.all_done([job_id]), timeout=30, every=0.1)
        (job,) = rig.fetch([job_id])
        assert job.get_status() == "failed"
        assert job_id in FailedJobRegistry(jobs.NOTION, connection=rig.connection)
        result = job.latest_result()
        assert result is not None and result.type == Result.Type.FAILED
        assert result.exc_string is not None
        assert "queue_ratelimit.errors.RequeueBudgetExhausted" in result.exc_string
        assert "requeued 3 times" in result.exc_string
        assert job.retries_left == 2  # final: RQ's Retry neither spent nor applied
        assert TICKET_HEADER not in job.meta  # requeued by hand, it starts afresh
        assert [line.split()[0] for line in rig.records("requeues")] == [job_id] * 3


@pytest.mark.parametrize("kind", KINDS)
def test_consecutive_5xx_pause_the_queue_until_a_probe_succeeds(kind: str, redis_url: str) -> None:
    with rq_rig(kind, redis_url, limit=100) as rig:
        worker = rig.start_worker([jobs.NOTION, jobs.GITHUB])
        rig.upstream.fail_with(500)
        failing = [rig.enqueue(jobs.NOTION, jobs.sync_notion, i).id for i in range(5)]
        wait_until(lambda: rig.all_done(failing), timeout=30, every=0.1)
        assert set(rig.statuses(failing)) == {"failed"}  # real errors fail as usual
        assert rig.limiter.snapshot(jobs.NOTION).breaker == "open"
        wait_until(lambda: rig.paused(worker) == {jobs.NOTION}, timeout=10)
        rig.upstream.fail_with(None)
        held = [rig.enqueue(jobs.NOTION, jobs.sync_notion, i).id for i in range(5)]
        other = rig.enqueue(jobs.GITHUB, jobs.sync_repo, "acme", 1).id
        wait_until(lambda: rig.all_done([other]), timeout=10, every=0.1)  # github flows
        assert rig.queue(jobs.NOTION).count == 5  # safe in Redis while the breaker is open
        assert rig.limiter.snapshot(jobs.NOTION).breaker_wait > 0  # (it still was)
        wait_until(lambda: not rig.paused(worker), timeout=15, every=0.1)
        wait_until(lambda: rig.all_done(held), timeout=30, every=0.1)
        assert set(rig.statuses(held)) == {"finished"}
        assert rig.limiter.snapshot(jobs.NOTION).breaker == "closed"  # the probe closed it
        assert rig.upstream.served_once({*held, other})


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

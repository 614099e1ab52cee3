"""Requeued RQ jobs' schedule (``rq_due``) on a real Redis: who enqueues a job, and when."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from rq import Queue, RateLimit
from rq.job import Job

from queue_ratelimit.integrations.rq_due import MARGIN, DueJobs, due_key

pytestmark = pytest.mark.redis


CREATED: list[str] = []


@pytest.fixture
def queue(redis_client: redis.Redis) -> Iterator[Queue]:
    queue = Queue(f"qrltest-due-{uuid.uuid4().hex[:8]}", connection=redis_client)
    yield queue
    doomed = [k for k in redis_client.scan_iter(match=f"*{queue.name}*", count=1000)]
    doomed += [Job.key_for(job_id) for job_id in CREATED]
    CREATED.clear()
    if doomed:
        redis_client.delete(*doomed)
    redis_client.srem("rq:queues", queue.key)


def _requeue(due: DueJobs, queue: Queue, countdown: float, **options: object) -> Job:
    job = queue.create_job(print, args=("x",), **options)  # type: ignore[arg-type]
    CREATED.append(job.id)
    with queue.connection.pipeline() as pipeline:
        due.schedule(job, queue, countdown, pipeline)
        pipeline.execute()
    return job


def _queued(queue: Queue) -> list[str]:
    return [m.decode() for m in queue.connection.lrange(queue.key, 0, -1)]


def test_due_jobs_go_to_the_front_of_their_queue_earliest_first(queue: Queue) -> None:
    due = DueJobs(queue.connection)
    fresh = queue.enqueue(print, "already queued")
    CREATED.append(fresh.id)
    second = _requeue(due, queue, -0.2)
    first = _requeue(due, queue, -0.4)
    later = _requeue(due, queue, 30.0)
    registry = queue.scheduled_job_registry
    for job in (first, second):  # RQ's fallback far away: the worker's to promote
        queue.connection.zadd(registry.key, {job.id: time.time() + 30})
    due_in = due.promote([queue])
    assert _queued(queue) == [first.id, second.id, fresh.id]
    assert set(registry.get_job_ids()) == {later.id}  # RQ's scheduler will not enqueue them
    assert queue.connection.zrange(due_key(queue), 0, -1) == [later.id.encode()]
    assert due_in is not None and 25 < due_in <= 30
    assert due.promote([queue]) == pytest.approx(due_in, abs=1.0)  # nothing more to move
    assert _queued(queue) == [first.id, second.id, fresh.id]


def test_a_job_near_its_fallback_is_left_to_rqs_scheduler(queue: Queue) -> None:
    due = DueJobs(queue.connection)
    job = _requeue(due, queue, -0.1)
    registry = queue.scheduled_job_registry
    queue.connection.zadd(registry.key, {job.id: time.time() + MARGIN / 2})
    assert due.promote([queue]) is None
    assert _queued(queue) == []  # RQ's scheduler may already have read it: not enqueued twice
    assert registry.get_job_ids() == [job.id]
    assert queue.connection.zcard(due_key(queue)) == 0


def test_a_job_no_longer_scheduled_is_not_enqueued(queue: Queue) -> None:
    due = DueJobs(queue.connection)
    job = _requeue(due, queue, -0.1)
    queue.scheduled_job_registry.remove(job.id)  # enqueued by RQ's scheduler, or cancelled
    assert due.promote([queue]) is None
    assert _queued(queue) == []
    assert queue.connection.zcard(due_key(queue)) == 0


def test_jobs_with_rqs_own_rate_limit_are_left_to_rqs_scheduler(queue: Queue) -> None:
    due = DueJobs(queue.connection)
    job = _requeue(due, queue, 0.0, rate_limit=RateLimit(f"{queue.name}-k", concurrency=1))
    assert queue.connection.zcard(due_key(queue)) == 0  # RQ's scheduler takes its slot
    assert queue.scheduled_job_registry.get_job_ids() == [job.id]


def test_the_fallback_is_whole_seconds_a_second_past_the_slot(queue: Queue) -> None:
    due = DueJobs(queue.connection)
    before = time.time()
    job = _requeue(due, queue, 2.5)
    fallback = queue.scheduled_job_registry.get_scheduled_time(job.id).timestamp()
    assert fallback == int(fallback)
    assert before + 3.5 <= fallback <= time.time() + 4.5
    score = queue.connection.zscore(due_key(queue), job.id)
    assert score is not None and before + 2.5 - 1 <= score <= fallback - 1  # server clock

"""Requeued RQ jobs' schedule (``rq_due``) on a real Redis: who enqueues a job, and when."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from rq import Queue, RateLimit
from rq.job import Job

from queue_ratelimit.integrations.rq_due import FALLBACK, DueJobs, due_key

pytestmark = pytest.mark.redis

CREATED: list[str] = []
FAR = 30.0  # a fallback so far away that a promotion cannot come too close to it


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


def _due(queue: Queue) -> list[str]:
    return [m.decode() for m in queue.connection.zrange(due_key(queue), 0, -1)]


def test_due_jobs_go_to_the_front_of_their_queue_earliest_first(queue: Queue) -> None:
    due = DueJobs(queue.connection, fallback=FAR)
    fresh = queue.enqueue(print, "already queued")
    CREATED.append(fresh.id)
    second = _requeue(due, queue, -0.2)
    first = _requeue(due, queue, -0.4)
    later = _requeue(due, queue, 20.0)
    registry = queue.scheduled_job_registry
    due_in = due.promote([queue])
    assert _queued(queue) == [first.id, second.id, fresh.id]
    assert registry.get_job_ids() == [later.id]  # RQ's scheduler will not enqueue them
    assert [m.split()[0] for m in _due(queue)] == [later.id]
    assert due_in is not None and 15 < due_in <= 20
    assert due.promote([queue]) == pytest.approx(due_in, abs=1.0)  # nothing more to move
    assert _queued(queue) == [first.id, second.id, fresh.id]


def test_a_job_whose_fallback_has_come_is_left_to_rqs_scheduler(queue: Queue) -> None:
    due = DueJobs(queue.connection, fallback=FAR)
    job = _requeue(due, queue, -0.1)
    (member,) = _due(queue)
    now = int(time.time())  # the fallback reached: RQ's scheduler may be enqueueing it now
    queue.connection.zadd(queue.scheduled_job_registry.key, {job.id: now})
    queue.connection.zrem(due_key(queue), member)
    queue.connection.zadd(due_key(queue), {f"{job.id} {now}": time.time() - 0.1})
    assert due.promote([queue]) is None
    assert _queued(queue) == []  # not enqueued twice
    assert queue.scheduled_job_registry.get_job_ids() == [job.id]
    assert _due(queue) == []


def test_a_later_schedule_of_rqs_own_is_kept(queue: Queue) -> None:
    due = DueJobs(queue.connection, fallback=FAR)
    job = _requeue(due, queue, -0.1)
    retry_at = int(time.time()) + 60  # RQ's scheduler enqueued it; it failed; Retry(60)
    queue.connection.zadd(queue.scheduled_job_registry.key, {job.id: retry_at})
    assert due.promote([queue]) is None
    assert _queued(queue) == []
    assert queue.scheduled_job_registry.get_scheduled_time(job.id).timestamp() == retry_at


def test_a_job_no_longer_scheduled_is_not_enqueued(queue: Queue) -> None:
    due = DueJobs(queue.connection, fallback=FAR)
    job = _requeue(due, queue, -0.1)
    queue.scheduled_job_registry.remove(job.id)  # enqueued by RQ's scheduler, or cancelled
    assert due.promote([queue]) is None
    assert _queued(queue) == []
    assert _due(queue) == []


def test_jobs_with_rqs_own_rate_limit_are_left_to_rqs_scheduler(queue: Queue) -> None:
    due = DueJobs(queue.connection)
    job = _requeue(due, queue, 0.0, rate_limit=RateLimit(f"{queue.name}-k", concurrency=1))
    assert _due(queue) == []  # RQ's scheduler takes its slot
    assert queue.scheduled_job_registry.get_job_ids() == [job.id]


def test_the_fallback_is_whole_seconds_a_second_past_the_slot(queue: Queue) -> None:
    due = DueJobs(queue.connection)
    before = time.time()
    job = _requeue(due, queue, 2.5)
    fallback = queue.scheduled_job_registry.get_scheduled_time(job.id).timestamp()
    assert fallback == int(fallback)
    assert before + 2.5 + FALLBACK - 1 <= fallback <= time.time() + 2.5 + FALLBACK + 2
    (member,) = _due(queue)
    assert member == f"{job.id} {int(fallback)}"
    score = queue.connection.zscore(due_key(queue), member)
    assert score is not None and fallback - FALLBACK - 1 <= score <= fallback - FALLBACK

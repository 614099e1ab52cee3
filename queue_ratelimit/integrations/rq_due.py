"""RQ: a requeued job comes back at its slot, not at RQ's next whole second.

RQ's ``ScheduledJobRegistry`` scores whole seconds and its scheduler looks once a second, so
a job requeued for a slot 0.2 s away used to come back one to two seconds later. A requeued
job is therefore scheduled twice:

* in this project's sorted set for its queue (``rq:queue_ratelimit:due:<queue>``), scored
  at the Redis server's clock plus the countdown;
* in RQ's registry, ``FALLBACK`` seconds later (rounded up to the second), for RQ's scheduler
  to enqueue if no rate-limited worker does it first.

Before each dequeue a ``RateLimitedWorker`` promotes the due jobs of its queues to the front
of their queues (``promote``) and blocks no longer than until the next one is due. The
promotion and the removal from RQ's registry are one script, and a job is promoted only while
its registry score is more than ``MARGIN`` seconds away (by the server's clock): RQ's
scheduler, which reads the registry by its host's clock, enqueues a job only once its score
has passed. So each job is enqueued once, by a worker or by RQ's scheduler, as long as the
scheduler's host clock is within ``MARGIN`` of the Redis server's. A promoted job keeps the
status ``scheduled`` until a worker takes it (at once, usually: it is at the front).

Jobs with RQ's own ``RateLimit`` are left to RQ's scheduler, which takes their slot.
"""

from __future__ import annotations

import importlib.resources
import math
import time
from collections.abc import Sequence
from datetime import datetime, timezone

import redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job

FALLBACK = 1.0
"""Seconds after its slot that a requeued job is due in RQ's registry (then rounded up)."""

MARGIN = 0.5
"""A job is promoted only while its registry score is further away than this (seconds)."""

MOST = 100
"""The most jobs promoted per queue in one call (the rest in the next)."""

KEY_PREFIX = "rq:queue_ratelimit:due:"


def _source() -> str:
    return (importlib.resources.files(__package__) / "lua" / "rq_due.lua").read_text("utf-8")


def due_key(queue: Queue) -> str:
    """The sorted set of the requeued jobs of ``queue``, scored when each is due."""
    return KEY_PREFIX + queue.name


class DueJobs:
    """Schedules requeued jobs to the millisecond and promotes them when due (see above)."""

    def __init__(self, connection: redis.Redis) -> None:
        self._script = connection.register_script(_source())
        self._keys: dict[tuple[str, ...], list[str]] = {}

    def schedule(self, job: Job, queue: Queue, countdown: float, pipeline: Pipeline) -> datetime:
        """Schedule ``job`` in ``countdown`` seconds, in ``pipeline``; returns RQ's fallback."""
        fallback = math.ceil(time.time() + countdown + FALLBACK)
        when = datetime.fromtimestamp(fallback, timezone.utc)
        queue.schedule_job(job, when, pipeline=pipeline)
        if not job.has_rate_limit:
            self._script(
                keys=[due_key(queue)], args=["add", job.id, repr(countdown)], client=pipeline
            )
        return when

    def promote(self, queues: Sequence[Queue]) -> float | None:
        """Move the due jobs of ``queues`` to the front of their queues.

        Returns:
            Seconds until the next requeued job of these queues is due; ``None`` if none is.
        """
        names = tuple(q.name for q in queues)
        keys = self._keys.get(names)
        if keys is None:
            keys = self._keys[names] = [
                key
                for q in queues
                for key in (due_key(q), q.scheduled_job_registry.key, q.key)
            ]
        if not keys:
            return None
        _, soonest = self._script(keys=keys, args=["promote", repr(MARGIN), MOST])
        return None if int(soonest) < 0 else int(soonest) / 1e6

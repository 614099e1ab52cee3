"""RQ: a requeued job comes back at its slot, not at RQ's next whole second.

RQ's ``ScheduledJobRegistry`` scores whole seconds and its scheduler looks once a second, so
a job requeued for a slot 0.2 s away used to come back one to two seconds later. A requeued
job is therefore scheduled twice:

* in this project's sorted set for its queue (``rq:queue_ratelimit:due:<queue>``), scored
  at the Redis server's clock plus the countdown;
* in RQ's registry, ``FALLBACK`` seconds later (rounded up to the second, by the server's
  clock too), for RQ's scheduler to enqueue if no rate-limited worker does it first.

Before each dequeue a ``RateLimitedWorker`` promotes the due jobs of its queues to the front
of their queues (``promote``) and blocks no longer than until the next one is due. The
promotion and the removal from RQ's registry are one script, and a job is promoted only while
its registry score is still the fallback written with it (not a later schedule of RQ's own)
and more than ``MARGIN`` seconds away (by the server's clock): RQ's
scheduler, which reads the registry by its host's clock, enqueues a job only once its score
has passed. So each job is enqueued once, by a worker or by RQ's scheduler, as long as the
scheduler's host clock is within ``MARGIN`` of the Redis server's. A promoted job keeps the
status ``scheduled`` until a worker takes it (at once, usually: it is at the front), and its
``ttl`` runs from the requeue, as it does in RQ's registry.

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
    """Schedules requeued jobs to the millisecond and promotes them when due (see above).

    Args:
        connection: RQ's Redis.
        fallback: seconds after its slot that a job is due in RQ's registry.
        margin: a job is promoted only while its registry score is further away than this.
    """

    def __init__(
        self, connection: redis.Redis, *, fallback: float = FALLBACK, margin: float = MARGIN
    ) -> None:
        self._script = connection.register_script(_source())
        self._fallback, self._margin = fallback, margin
        self._keys: dict[str, tuple[str, str, str]] = {}

    def schedule(self, job: Job, queue: Queue, countdown: float, pipeline: Pipeline) -> None:
        """Schedule ``job`` in ``countdown`` seconds, in ``pipeline``."""
        when = datetime.fromtimestamp(math.ceil(time.time() + countdown), timezone.utc)
        queue.schedule_job(job, when, pipeline=pipeline)  # the job saved, in RQ's registry
        if not job.has_rate_limit:  # slot and fallback by the server's clock
            keys = [due_key(queue), queue.scheduled_job_registry.key]
            args = ["add", job.id, repr(countdown), repr(self._fallback)]
            self._script(keys=keys, args=args, client=pipeline)

    def promote(self, queues: Sequence[Queue]) -> float | None:
        """Move the due jobs of ``queues`` to the front of their queues.

        Returns:
            Seconds until the next requeued job of these queues is due; ``None`` if none is.
        """
        if not queues:
            return None
        keys: list[str] = []
        for q in queues:
            three = self._keys.get(q.name)
            if three is None:
                three = self._keys[q.name] = (due_key(q), q.scheduled_job_registry.key, q.key)
            keys += three
        _, soonest = self._script(keys=keys, args=["promote", repr(self._margin), MOST])
        return None if int(soonest) < 0 else int(soonest) / 1e6

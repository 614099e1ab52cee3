"""RQ: the dequeue of a rate-limited worker: requeued jobs that are due go back to their
queues first, the dequeue blocks no longer than until the next one is due, and queues named
like an integration whose breaker is open are left out (their jobs stay in Redis) until the
breaker admits its probe.
"""

from __future__ import annotations

import math
import time

import redis
from rq import Queue
from rq.job import Job
from rq.utils import get_version
from rq.worker import BaseWorker, DequeueStrategy, WorkerStatus

from queue_ratelimit.integrations.polling import PollLog
from queue_ratelimit.integrations.rq_due import DueJobs
from queue_ratelimit.integrations.rq_settings import PAUSED_FIELD
from queue_ratelimit.tasks import TaskGate

__all__ = ["PausingDequeue"]


class PausingDequeue(BaseWorker):
    """The dequeue half of ``RateLimitedWorkerMixin`` (which gives ``gate`` and ``_poll``)."""

    _paused: frozenset[str] = frozenset()
    _next_check = 0.0
    _whole_seconds: bool | None = None
    _poll = 1.0
    _due: DueJobs | None = None
    _trouble: PollLog | None = None

    @property
    def gate(self) -> TaskGate:
        """The worker's gate (``RateLimitedWorkerMixin`` builds it)."""
        raise NotImplementedError

    @property
    def due(self) -> DueJobs:
        """Requeued jobs' schedule, on the worker's RQ connection."""
        if self._due is None:
            self._due = DueJobs(self.connection)
        return self._due

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Promote due requeued jobs, then dequeue from the queues whose breaker is not open.

        A queue is named like its integration. While blocked, the dequeue is cut into slices
        of ``poll`` seconds (at least 1) when a queue is named like an integration, so a
        breaker opened by another worker is noticed within them; and it ends when the next
        requeued job is due.
        """
        started = time.monotonic()
        while True:
            paused = self._paused_queues()
            ready = [q for q in self._ordered_queues if q.name not in paused]
            result = self._dequeue_from(ready, timeout, self._promote(ready))
            if result is not None or timeout is None:
                return result
            if max_idle_time is not None and time.monotonic() - started >= max_idle_time:
                return None

    def _promote(self, ready: list[Queue]) -> float | None:
        """Seconds until the next requeued job of ``ready`` is due (the due ones promoted)."""
        try:
            return self.due.promote(ready)
        except redis.RedisError:  # RQ's scheduler enqueues them a second late
            self.log.exception("Worker %s: promoting requeued jobs failed", self.name)
            return None

    def _dequeue_from(
        self, ready: list[Queue], timeout: int | None, due_in: float | None
    ) -> tuple[Job, Queue] | None:
        step = None if timeout is None else self._step(timeout, due_in)
        if not ready:  # every queue paused: stay alive and look again
            try:
                self.set_state(WorkerStatus.IDLE)
                self.heartbeat()
            except redis.RedisError:
                self.log.exception("Worker %s: heartbeat failed", self.name)
            if step is not None:
                time.sleep(step)
            return None
        every = self._ordered_queues
        self._ordered_queues = ready
        try:
            result = super().dequeue_job_and_maintain_ttl(step, step)  # type: ignore[arg-type]
        finally:  # keep a round-robin/random order; the default order is the configured one
            if self._dequeue_strategy in (None, DequeueStrategy.DEFAULT):
                self._ordered_queues = every
            else:
                self._ordered_queues += [q for q in every if q not in self._ordered_queues]
        if result is not None and len(ready) == 1 < len(self.queues):
            # one queue left is dequeued with LMOVE to its intermediate list, which RQ only
            # clears for single-queue workers: clear it as RQ does, or maintenance fails it
            job, queue = result
            self.connection.lrem(queue.intermediate_queue_key, 1, job.id)
        return result

    def _step(self, timeout: float, due_in: float | None) -> float:
        """How long one blocking dequeue may last (see ``dequeue_job_and_maintain_ttl``)."""
        if any(q.name in self.gate.limiter.configs for q in self.queues):
            timeout = min(timeout, max(1, math.ceil(self._poll)))
        if due_in is not None:
            timeout = min(timeout, max(due_in, 0.01))  # RQ refuses 0 ("block forever")
        if self._whole_seconds is None:  # Redis < 6 blocks for whole seconds only
            self._whole_seconds = get_version(self.connection) < (6, 0, 0)
        return max(1, math.ceil(timeout)) if self._whole_seconds else timeout

    def _paused_queues(self) -> frozenset[str]:
        now = time.monotonic()
        if now < self._next_check:
            return self._paused
        self._next_check = now + self._poll
        limiter = self.gate.limiter
        paused = set()
        failures: list[Exception] = []
        for name in sorted({q.name for q in self.queues} & set(limiter.configs)):
            try:
                held = limiter.snapshot(name).breaker_holds
            except Exception as exc:  # Redis trouble must not stop the worker: keep what we knew
                failures.append(exc)
                held = name in self._paused
            if held:
                paused.add(name)
        trouble = self._trouble = self._trouble or PollLog(self.log)
        for failure in failures:
            trouble.failed(failure)
        if not failures:
            trouble.succeeded()
        if paused != self._paused:
            for name in sorted(paused - self._paused):
                self.log.warning("queue_ratelimit: breaker of %s is open: queue paused", name)
            for name in sorted(self._paused - paused):
                self.log.warning("queue_ratelimit: breaker of %s: queue resumed", name)
            self._paused = frozenset(paused)
            try:  # for operators (and tests): which queues this worker leaves alone
                self.connection.hset(self.key, PAUSED_FIELD, ",".join(sorted(paused)))
            except redis.RedisError:
                self.log.exception("Worker %s: could not record paused queues", self.name)
        return self._paused

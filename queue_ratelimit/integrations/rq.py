"""RQ: ``rate_limited`` jobs, and workers that pace them and pause broken integrations.

::

    @rate_limited("notion", tenant=lambda workspace, page: workspace)
    def sync_page(workspace, page): ...

    queue.enqueue(sync_page, "ws-1", "page-9")

    # QUEUE_RATELIMIT_REDIS_URL=redis://localhost:6379/1 \\
    # rq worker -w queue_ratelimit.integrations.rq.RateLimitedWorker --with-scheduler notion github

``rate_limited`` only marks the function; the worker does the rest, in the process that runs
the job (the work horse of the forking ``RateLimitedWorker``, the worker itself for
``RateLimitedSimpleWorker``):

* ``perform_job``: before the body the job acquires from its integration's limiter. A wait up
  to ``max_wait`` is slept; a longer one ends the execution at once and the same job (same
  id) is scheduled for its reserved slot: a rate-limited worker puts it back at the front of
  its queue when the slot is due, RQ's scheduler (``--with-scheduler``) a second later if
  none did (``rq_due``). A ``RateLimited`` met in the body (the HTTP clients raise it on a
  429) does the same with the upstream's ``Retry-After``.
* ``handle_job_retry``: such a requeue travels as a ``Retry`` returned in place of the
  result, so it never passes through the failure path: ``retries_left``, failure callbacks
  and exception handlers are untouched. The count of requeues lives in ``job.meta`` and has
  its own budget; when it is spent the job fails with ``RequeueBudgetExhausted`` and lands
  in the ``FailedJobRegistry`` (RQ's ``Retry`` does not restart it).
* ``dequeue_job_and_maintain_ttl``: requeued jobs that are due go back to their queues first,
  and the dequeue blocks no longer than until the next one is due. Queues named like an
  integration whose breaker is open are left out of the dequeue (their jobs stay in Redis)
  until the breaker admits its probe.

Settings come from the environment (``limiter_from_env``: ``QUEUE_RATELIMIT_REDIS_URL``,
``_PREFIX``, ``_CONFIG``; and ``QUEUE_RATELIMIT_MAX_COUNTDOWN``, ``QUEUE_RATELIMIT_POLL``) or
from a subclass (``RateLimitedWorkerMixin``); an invalid one stops the worker at start with
a ``ConfigError`` naming it. See docs/rq.md.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import redis
from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job, Retry
from rq.rate_limit import release_slot
from rq.registry import StartedJobRegistry
from rq.utils import get_version
from rq.worker import BaseWorker, DequeueStrategy, WorkerStatus

from queue_ratelimit import context
from queue_ratelimit.errors import ConfigError, RateLimited, RequeueBudgetExhausted
from queue_ratelimit.integrations.polling import PollLog
from queue_ratelimit.integrations.rq_due import DueJobs
from queue_ratelimit.integrations.rq_settings import (
    MAX_COUNTDOWN_ENV,
    PAUSED_FIELD,
    POLL_ENV,
    JobLimits,
    env_seconds,
    limiter_from_env,
    limits_of,
    rate_limited,
)
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.tasks import TICKET_HEADER, Requeue, Run, TaskGate, Ticket

__all__ = [
    "JobLimits",
    "RateLimitedSimpleWorker",
    "RateLimitedWorker",
    "RateLimitedWorkerMixin",
    "limiter_from_env",
    "rate_limited",
]

# -- the worker ----------------------------------------------------------------------------


class _Requeue(Retry):
    """Returned in place of a job's result: ``handle_job_retry`` schedules the job again."""

    def __init__(self, requeue: Requeue) -> None:
        super().__init__(max=1)
        self.requeue = requeue

    def __repr__(self) -> str:
        return f"requeue({self.requeue.reason}, in {self.requeue.countdown:.3f}s)"


class RateLimitedWorkerMixin(BaseWorker):
    """Paces ``rate_limited`` jobs and skips queues whose breaker is open; mix in first.

    Attributes:
        limiter: a limiter for every worker of the class (else one is built from the
            environment, or given as ``limiter=`` to the constructor).
        max_countdown: the longest single schedule (else ``QUEUE_RATELIMIT_MAX_COUNTDOWN``).
        poll: seconds between breaker checks (else ``QUEUE_RATELIMIT_POLL``).
    """

    limiter: ClassVar[Limiter | None] = None
    max_countdown: ClassVar[float | None] = None
    poll: ClassVar[float | None] = None

    def __init__(self, *args: Any, limiter: Limiter | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limiter = limiter
        self._gate: TaskGate | None = None
        self._poll = 1.0
        self._paused: frozenset[str] = frozenset()
        self._next_check = 0.0
        self._trouble = PollLog(self.log)
        self._exhausted: set[str] = set()
        self._due: DueJobs | None = None
        self._whole_seconds: bool | None = None
        if kwargs.get("prepare_for_work", True):
            self.gate  # noqa: B018 - invalid settings fail here, at worker start

    @property
    def gate(self) -> TaskGate:
        """The worker's gate, built on first use from the settings above (with ``_poll``)."""
        if self._gate is None:
            env = os.environ
            limiter = self._limiter or type(self).limiter
            if limiter is None:
                limiter = limiter_from_env(env, connection=self.connection)
            countdown = self.max_countdown or env_seconds(env, MAX_COUNTDOWN_ENV, 600.0)
            self._poll = self.poll or env_seconds(env, POLL_ENV, 1.0)
            if not isinstance(self, SimpleWorker):
                _refuse_local_fallback(limiter)
            self._gate = TaskGate(limiter, max_countdown=countdown)
        return self._gate

    @property
    def due(self) -> DueJobs:
        """Requeued jobs' schedule, on the worker's RQ connection."""
        if self._due is None:
            self._due = DueJobs(self.connection)
        return self._due

    # -- running a job (in the process that runs it) -----------------------------------------

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """Run a ``rate_limited`` job only with a slot; see the module docstring."""
        limits = limits_of(job)
        if limits is not None:  # inside RQ's bookkeeping (timeout, registries, results)
            gated = partial(self._perform_gated, job, limits, job.perform)
            job.perform = gated  # type: ignore[method-assign]
        return super().perform_job(job, queue, execution)

    def _perform_gated(self, job: Job, limits: JobLimits, perform: Callable[[], Any]) -> Any:
        gate, integration = self.gate, limits.integration
        tenant = limits.tenant_for(job.args, job.kwargs)
        cost = limits.cost_for(job.args, job.kwargs)
        ticket = Ticket.loads(job.meta.get(TICKET_HEADER))
        info = context.TaskInfo(job.func_name or "", job.id)
        try:
            with context.running(info):
                verdict = gate.before(
                    integration,
                    tenant,
                    ticket,
                    max_wait=limits.max_wait,
                    budget=limits.requeue_budget,
                    cost=cost,
                )
            if isinstance(verdict, Requeue):
                return _Requeue(verdict)
            _forget_ticket(job)  # its reservation is redeemed: never present it again
            slot = context.Prepaid(integration, tenant, verdict.decision, cost)
            return self._run(verdict, limits, slot, ticket, info, perform)
        except RequeueBudgetExhausted:
            _forget_ticket(job)  # a job requeued by hand from the failed registry starts afresh
            self._exhausted.add(job.id)
            raise

    def _run(
        self,
        verdict: Run,
        limits: JobLimits,
        slot: context.Prepaid,
        ticket: Ticket,
        info: context.TaskInfo,
        perform: Callable[[], Any],
    ) -> Any:
        gate, integration, decision = self.gate, limits.integration, verdict.decision
        tenant = slot.tenant
        if decision.wait > 0:
            time.sleep(decision.wait)
        try:
            try:
                with context.running(info, slot, context.hand_over):
                    return perform()
            except context.Backoff as backoff:
                exc = backoff.exc
            except RateLimited as raised:  # raised by code that did not go through the hook
                exc = raised
            with context.running(info):
                return _Requeue(
                    gate.rate_limited(
                        integration,
                        tenant,
                        ticket,
                        exc.retry_after,
                        budget=limits.requeue_budget,
                        reason=exc.reason,
                    )
                )
        finally:
            gate.release_unused(slot)

    def handle_job_retry(
        self,
        job: Job,
        queue: Queue,
        retry: Retry,
        started_job_registry: StartedJobRegistry,
        execution: Execution,
    ) -> None:
        """Schedule a requeued job for its slot; any other ``Retry`` is RQ's."""
        if not isinstance(retry, _Requeue):
            super().handle_job_retry(job, queue, retry, started_job_registry, execution)
            return
        requeue = retry.requeue
        job.meta[TICKET_HEADER] = requeue.ticket.dumps()
        with self.connection.pipeline() as pipeline:
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            self.due.schedule(job, queue, requeue.countdown, pipeline)
            pipeline.execute()
        self.log.info(
            "Worker %s: job %s requeued (%s, %d so far) for %.3f s from now",
            self.name,
            job.id,
            requeue.reason,
            requeue.ticket.requeues,
            requeue.countdown,
        )
        try:
            release_slot(job)  # RQ's own concurrency limit, as RQ does for a retry
        except Exception:
            self.log.exception("Worker %s: failed to release slot of job %s", self.name, job.id)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry | None = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        """RQ's failure path; ``RequeueBudgetExhausted`` is final (``Retry`` does not apply)."""
        if job.id not in self._exhausted:
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        self._exhausted.discard(job.id)
        retries_left, job.retries_left = job.retries_left, None
        try:
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        finally:
            job.retries_left = retries_left

    # -- the breaker pauses queues (in the worker's main process) ----------------------------

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
        for failure in failures:
            self._trouble.failed(failure)
        if not failures:
            self._trouble.succeeded()
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


def _forget_ticket(job: Job) -> None:
    if TICKET_HEADER in job.meta:
        del job.meta[TICKET_HEADER]
        job.save_meta()  # type: ignore[no-untyped-call]


def _refuse_local_fallback(limiter: Limiter) -> None:
    """A forking worker starts each job in a fresh process: a local fallback limiter there
    would start full for every job, i.e. limit nothing."""
    for config in limiter.configs.values():
        if config.on_backend_error == "open":
            raise ConfigError(
                config.name,
                "on_backend_error",
                "open",
                "RQ's forking worker keeps no local state between jobs: use "
                "RateLimitedSimpleWorker for a local fallback, or 'closed'",
            )


class RateLimitedWorker(RateLimitedWorkerMixin, Worker):
    """RQ's forking ``Worker``: each job's gate and body run in its work horse."""


class RateLimitedSimpleWorker(RateLimitedWorkerMixin, SimpleWorker):
    """RQ's ``SimpleWorker``: jobs run in the worker's own process."""

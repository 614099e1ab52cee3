"""RQ: ``rate_limited`` jobs, and workers that pace them and pause broken integrations.

::

    @rate_limited("notion", tenant=lambda workspace, page: workspace)
    def sync_page(workspace, page): ...

    # rq worker -w queue_ratelimit.integrations.rq.RateLimitedWorker --with-scheduler notion

A marked job runs through ``queue_ratelimit.runner`` in the process that runs it (the work
horse of ``RateLimitedWorker``, the worker itself for ``RateLimitedSimpleWorker``). A requeue
is a ``Retry`` returned in place of the result, so RQ's failure path (``retries_left``,
callbacks, exception handlers) never sees it; ``handle_job_retry`` schedules the same job for
its slot (``rq_due``) and the dequeue brings it back (``rq_dequeue``). Settings:
``rq_settings``; see docs/rq.md.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job, Retry
from rq.rate_limit import release_slot
from rq.registry import StartedJobRegistry

from queue_ratelimit.context import TaskInfo
from queue_ratelimit.errors import ConfigError, RequeueBudgetExhausted
from queue_ratelimit.integrations.rq_dequeue import PausingDequeue
from queue_ratelimit.integrations.rq_settings import (
    announce,
    check_jobs,
    limiter_for,
    limiter_from_env,
    limits_of,
    rate_limited,
    worker_gate,
)
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.runner import TaskLimits, TaskRun
from queue_ratelimit.tasks import TICKET_HEADER, Requeue, TaskGate, Ticket

__all__ = [
    "RateLimitedSimpleWorker",
    "RateLimitedWorker",
    "RateLimitedWorkerMixin",
    "TaskLimits",
    "limiter_for",
    "limiter_from_env",
    "rate_limited",
]


class _Requeue(Retry):
    """Returned in place of a job's result: ``handle_job_retry`` schedules the job again."""

    def __init__(self, requeue: Requeue) -> None:
        super().__init__(max=1)
        self.requeue = requeue

    def __repr__(self) -> str:
        return f"requeue({self.requeue.reason}, in {self.requeue.countdown:.3f}s)"


class RateLimitedWorkerMixin(PausingDequeue):
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
        limiter_given = limiter is not None
        self._limiter = limiter
        self._gate: TaskGate | None = None
        self._exhausted: set[str] = set()
        self._configured = limiter_given or type(self).limiter is not None  # in code
        if kwargs.get("prepare_for_work", True):  # invalid settings fail here, at start
            announce(self.log, self.gate.limiter, [q.name for q in self.queues], self._configured)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop, after checking the job functions imported so far against the
        limiter built from the settings (a limiter given in code is the caller's choice):
        a job naming an unknown integration stops the worker with one line, exit status 1."""
        if not self._configured:
            try:
                check_jobs(self.gate.limiter)
            except ConfigError as exc:  # one line, not RQ's traceback
                self.log.critical("queue_ratelimit: ConfigError: %s", exc)
                raise SystemExit(1) from exc
        return bool(super().work(*args, **kwargs))

    @property
    def gate(self) -> TaskGate:
        """The worker's gate, built on first use from the settings above (with ``_poll``)."""
        if self._gate is None:
            limiter = self._limiter or type(self).limiter
            forking = not isinstance(self, SimpleWorker)
            self._gate, self._poll = worker_gate(
                limiter,
                self.connection,
                self.max_countdown,
                self.poll,
                forking=forking,
                logger=self.log,  # each requeue's one line, where ``rq worker`` logs
            )
        return self._gate

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """Run a ``rate_limited`` job only with a slot; see the module docstring."""
        limits = limits_of(job)
        if limits is not None:  # inside RQ's bookkeeping (timeout, registries, results)
            gated = partial(self._perform_gated, job, limits, job.perform)
            job.perform = gated  # type: ignore[method-assign]
        return super().perform_job(job, queue, execution)

    def _perform_gated(self, job: Job, limits: TaskLimits, perform: Callable[[], Any]) -> Any:
        ticket = Ticket.loads(job.meta.get(TICKET_HEADER))
        call = limits.call(job.args, job.kwargs)
        run = TaskRun(self.gate, call, ticket, TaskInfo(job.func_name or "", job.id))
        try:  # a redeemed reservation is forgotten at once: never presented again
            requeue = run.admit(granted=partial(_forget_ticket, job))
            if requeue is not None:
                return _Requeue(requeue)
            outcome = run.run_admitted(perform)
        except RequeueBudgetExhausted:
            _forget_ticket(job)  # a job requeued by hand from the failed registry starts afresh
            self._exhausted.add(job.id)
            raise
        return _Requeue(outcome) if isinstance(outcome, Requeue) else outcome

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


def _forget_ticket(job: Job) -> None:
    if TICKET_HEADER in job.meta:
        del job.meta[TICKET_HEADER]
        job.save_meta()  # type: ignore[no-untyped-call]


class RateLimitedWorker(RateLimitedWorkerMixin, Worker):
    """RQ's forking ``Worker``: each job's gate and body run in its work horse."""


class RateLimitedSimpleWorker(RateLimitedWorkerMixin, SimpleWorker):
    """RQ's ``SimpleWorker``: jobs run in the worker's own process."""


def __getattr__(name: str) -> Any:
    if name == "JobLimits":  # the old name, kept for one release (see rq_settings)
        from queue_ratelimit.integrations import rq_settings

        return getattr(rq_settings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Celery: ``RateLimitedTask``, per-integration routing, and a breaker that pauses consumption.

::

    app.conf.queue_ratelimit_redis_url = "redis://localhost:6379/1"
    app.conf.task_routes = (integration_router,)
    install(app)                              # the worker bootsteps

    @app.task(base=RateLimitedTask, integration="notion", tenant=lambda ws, page: ws)
    def sync_page(ws, page): ...

The task runs through ``queue_ratelimit.runner``; a requeue keeps the task id and
``request.retries`` (``max_retries`` and ``autoretry_for`` never see it) and is published by
``celery_requeue``. Settings: ``celery_settings``; see docs/celery.md.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from functools import partial
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore

from queue_ratelimit.context import Backoff, TaskInfo
from queue_ratelimit.errors import ConfigError, RateLimited
from queue_ratelimit.integrations.celery_breaker import BreakerStep
from queue_ratelimit.integrations.celery_due import (
    STALE,
    UNCHECKED,
    PromoteStep,
    arrival,
    due_for,
    enable,
    ticket_header,
)
from queue_ratelimit.integrations.celery_requeue import quiet_retry_lines, republish
from queue_ratelimit.integrations.celery_settings import configure, gate_for, limiter_for
from queue_ratelimit.plans import Cost
from queue_ratelimit.runner import TaskLimits, TaskRun, current_run, requeue_after
from queue_ratelimit.tasks import Requeue, Ticket

__all__ = [
    "Backoff",
    "BreakerStep",
    "RateLimitedTask",
    "check_tasks",
    "configure",
    "due_for",
    "install",
    "integration_router",
    "limiter_for",
]

log = logging.getLogger(__name__)


class RateLimitedTask(Task):  # type: ignore[misc]
    """A Celery task whose body runs only with a slot from its integration's limiter.

    Attributes:
        integration: the integration whose limits apply (required).
        requeue_budget: requeues allowed before ``RequeueBudgetExhausted`` (default: the
            integration's ``requeue_budget``).
        max_wait: the longest wait slept in the worker (default: the integration's).

    Override ``tenant(*args, **kwargs)`` for a limit per tenant, and ``cost(*args,
    **kwargs)`` (or set ``cost`` to a number or a ``{limit: units}`` mapping) when a task
    spends more than one request, e.g. ``{"tokens": estimate}`` on OpenAI; both may also be
    given to the decorator as plain functions of the task's arguments.
    """

    integration: str | None = None
    requeue_budget: int | None = None
    max_wait: float | None = None
    Request = "queue_ratelimit.integrations.celery_published:Request"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("tenant", "cost"):
            given = cls.__dict__.get(name)
            if inspect.isfunction(given) and not _takes_self(given):
                # @app.task(base=RateLimitedTask, tenant=lambda ws, page: ws): a plain function
                setattr(cls, name, staticmethod(given))

    def tenant(self, *args: Any, **kwargs: Any) -> str | None:
        """The tenant key for these arguments (override it); None: one limit for all."""
        return None

    def cost(self, *args: Any, **kwargs: Any) -> Cost:
        """What a run with these arguments spends (override it): a number of requests, or
        ``{limit: units}`` (``requests`` then defaults to 1)."""
        return 1.0

    @property
    def task_limits(self) -> TaskLimits:
        """The task's limits (``ConfigError`` when it names no integration)."""
        if not self.integration:
            raise ConfigError(None, "integration", self.integration, f"task {self.name} has none")
        return TaskLimits(
            self.integration, self.tenant, self.cost, self.requeue_budget, self.max_wait
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly or self.request.is_eager:
            return super().__call__(*args, **kwargs)
        ticket = Ticket.loads(ticket_header(self.request))
        state = arrival(self.app, self.request, ticket)
        if state == STALE:
            raise Ignore()  # acknowledged: its latest copy is elsewhere
        call = self.task_limits.call(args, kwargs)
        run = TaskRun(gate_for(self.app), call, ticket, TaskInfo(self.name, self.request.id))
        if state == UNCHECKED:  # round again through the broker, with the same token
            raise republish(self, run.outage(2.0), ticket)
        outcome = run.run(partial(super().__call__, *args, **kwargs))
        if isinstance(outcome, Requeue):
            raise republish(self, outcome, ticket)
        return outcome

    def rate_limited(self, retry_after: float, *, report: bool = True) -> BaseException:
        """Deprecated: ``raise queue_ratelimit.requeue_after(retry_after)`` instead."""
        warnings.warn(
            "RateLimitedTask.rate_limited() is deprecated: raise "
            "queue_ratelimit.requeue_after(retry_after) instead",
            DeprecationWarning,
            stacklevel=2,
        )
        run = current_run()
        if run is not None and run.call.integration == self.integration:
            return requeue_after(retry_after, report=report)
        call = self.task_limits.call(self.request.args or (), self.request.kwargs or {})
        if report:  # outside its own run (eager, called directly): as the old method did
            limiter_for(self.app).on_backoff(call.integration, call.tenant, retry_after=retry_after)
        return Backoff(RateLimited(retry_after, call.integration, call.tenant))


def _takes_self(function: Any) -> bool:
    params = list(inspect.signature(function).parameters)
    return bool(params) and params[0] == "self"


def check_tasks(app: Celery) -> None:
    """Check the app's settings and the limits of every ``RateLimitedTask``.

    ``install(app)`` runs it when a worker starts, so a mistake stops the worker there
    instead of failing tasks one by one (or leaving them in a queue no worker consumes).
    Every integration a registered task names must be known to the app's limiter.

    Raises:
        ConfigError: naming the task and the field (``integration`` with a suggestion,
            ``cost``, ...).
    """
    limiter = limiter_for(app)
    for task in list(app.tasks.values()):
        if isinstance(task, RateLimitedTask) and task.integration:
            task.task_limits.check(limiter, f"task {task.name}")


def integration_router(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> dict[str, str] | None:
    """A ``task_routes`` entry sending each ``RateLimitedTask`` to its integration's queue."""
    integration = getattr(task, "integration", None)
    if isinstance(task, RateLimitedTask) and integration:
        return {"queue": integration}
    return None


def install(app: Celery) -> None:
    """Add ``BreakerStep`` and ``PromoteStep`` to the app's workers; with a limiter on Redis,
    requeued tasks then wait in Redis until due (``celery_due``). A requeue is logged once,
    by the gate (``celery_requeue.quiet_retry_lines``)."""
    app.steps["consumer"].add(BreakerStep)
    app.steps["consumer"].add(PromoteStep)
    enable(app)
    quiet_retry_lines()

"""Celery: ``RateLimitedTask``, per-integration routing, and a breaker that pauses consumption.

::

    app = Celery("app", broker="redis://localhost:6379/0")
    app.conf.queue_ratelimit_redis_url = "redis://localhost:6379/1"
    app.conf.task_routes = (integration_router,)
    install(app)                              # the worker bootstep that pauses queues

    class SyncNotion(RateLimitedTask):
        integration = "notion"
        def tenant(self, workspace_id, page_id):
            return workspace_id
        def run(self, workspace_id, page_id): ...

    sync_notion = app.register_task(SyncNotion())

    @app.task(base=RateLimitedTask, integration="github", bind=True)
    def sync_repo(self, installation_id, repo): ...

Before the body runs the task acquires; a short wait is slept, a longer one requeues the
task (same task id, ``request.retries`` unchanged: ``max_retries`` and ``autoretry_for``
never see it) and frees the worker slot at once. A ``RateLimited`` met in the body (the
project's HTTP clients raise it on a 429, or ``raise self.rate_limited(retry_after=...)``)
does the same with the upstream's ``Retry-After``. With ``install(app)`` and a limiter on
Redis the requeued task waits in that Redis until its slot and a stale copy of a task is
dropped (``celery_due``); otherwise it is published to the broker with a countdown, before
the current message is acknowledged. After ``requeue_budget`` requeues the task fails with
``RequeueBudgetExhausted``.

Settings (``app.conf``): ``queue_ratelimit_redis_url`` (shared state; without it, an
in-process memory backend), ``queue_ratelimit_prefix`` (default ``qrl``),
``queue_ratelimit_config`` (a TOML or JSON file of integration overrides),
``queue_ratelimit_max_countdown`` (longest countdown handed to the broker; default 600 s, or
half the Redis broker's ``visibility_timeout`` when smaller), ``queue_ratelimit_poll``
(seconds between the breaker checks of ``install``'s bootstep, default 1),
``queue_ratelimit_promote_interval`` and ``queue_ratelimit_ticket_keep`` (``celery_due``).
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, Retry

from queue_ratelimit import context
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.context import Backoff
from queue_ratelimit.errors import (
    BACKEND_UNAVAILABLE,
    BackendError,
    ConfigError,
    InvalidRequest,
    RateLimited,
)
from queue_ratelimit.integrations.celery_breaker import BreakerStep
from queue_ratelimit.integrations.celery_due import (
    STALE,
    UNCHECKED,
    PromoteStep,
    arrival,
    due_for,
    enable,
    encode,
    first_delivery,
    ticket_header,
)
from queue_ratelimit.integrations.due import DueTasks
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import Cost
from queue_ratelimit.registry import load_configs
from queue_ratelimit.tasks import TICKET_HEADER, Requeue, Run, TaskGate, Ticket

__all__ = [
    "Backoff",
    "BreakerStep",
    "RateLimitedTask",
    "configure",
    "install",
    "integration_router",
    "limiter_for",
]

log = logging.getLogger(__name__)
_GATE_ATTR = "_queue_ratelimit_gate"


def configure(app: Celery, limiter: Limiter | None = None, **options: Any) -> TaskGate:
    """Give ``app`` its limiter (built from ``app.conf`` when omitted) and return its gate.

    Raises:
        ConfigError: a ``queue_ratelimit_*`` setting is invalid (named in the error).
    """
    conf = app.conf
    if limiter is None:
        limiter = _limiter_from_conf(conf)
    max_countdown = options.pop("max_countdown", None) or conf.get("queue_ratelimit_max_countdown")
    if max_countdown is None:
        max_countdown = _default_max_countdown(conf)
    if not isinstance(max_countdown, int | float) or max_countdown <= 0:
        raise ConfigError(None, "queue_ratelimit_max_countdown", max_countdown, "must be > 0")
    gate = TaskGate(limiter, max_countdown=float(max_countdown), **options)
    setattr(app, _GATE_ATTR, gate)
    return gate


def gate_for(app: Celery) -> TaskGate:
    """The app's gate, configured from ``app.conf`` on first use."""
    gate = getattr(app, _GATE_ATTR, None)
    return gate if isinstance(gate, TaskGate) else configure(app)


def check_tasks(app: Celery) -> None:
    """Check the app's settings and the fixed ``cost`` of every ``RateLimitedTask``.

    ``install(app)`` runs it when a worker starts, so a mistake stops the worker there
    instead of failing tasks one by one. A task whose integration the limiter does not
    know is only logged: the registry also holds other apps' shared tasks, and such a task
    fails with ``ConfigError`` when it runs.

    Raises:
        ConfigError: naming the task and the field (``cost``).
    """
    limiter = gate_for(app).limiter
    for task in list(app.tasks.values()):
        if not isinstance(task, RateLimitedTask) or not task.integration:
            continue
        if task.integration not in limiter.configs:
            log.warning(
                "queue_ratelimit: task %s names integration %r, which the limiter does not know",
                task.name,
                task.integration,
            )
            continue
        cost = task.cost
        if not callable(cost):
            try:
                limiter.costs(task.integration, cost)
            except (InvalidRequest, TypeError) as exc:
                reason = f"task {task.name}: {exc}"
                raise ConfigError(task.integration, "cost", cost, reason) from exc


def limiter_for(app: Celery) -> Limiter:
    """The limiter the app's tasks use (for HTTP clients and operator calls)."""
    return gate_for(app).limiter


def _limiter_from_conf(conf: Mapping[str, Any]) -> Limiter:
    path = conf.get("queue_ratelimit_config")
    if path is None:
        configs = load_configs()
    elif str(path).endswith(".toml"):
        configs = load_configs(toml_path=path)
    elif str(path).endswith(".json"):
        configs = load_configs(json_path=path)
    else:
        raise ConfigError(None, "queue_ratelimit_config", path, "must be a .toml or .json file")
    url = conf.get("queue_ratelimit_redis_url")
    if url is None:
        return Limiter(MemoryBackend(), configs)
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(None, "queue_ratelimit_redis_url", url, "must be a redis:// URL")
    from queue_ratelimit.backends.redis import RedisBackend

    return Limiter(RedisBackend(url, prefix=conf.get("queue_ratelimit_prefix") or "qrl"), configs)


def _default_max_countdown(conf: Mapping[str, Any]) -> float:
    broker = str(conf.get("broker_url") or "")
    options = conf.get("broker_transport_options") or {}
    if broker.startswith(("redis", "rediss", "sentinel")):
        return min(600.0, float(options.get("visibility_timeout", 3600)) / 2)
    return 600.0


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

    def _cost(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Cost:
        given: Any = self.cost
        return given(*args, **kwargs) if callable(given) else given  # type: ignore[no-any-return]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly or self.request.is_eager:
            return super().__call__(*args, **kwargs)
        integration = self._integration()
        tenant = self.tenant(*args, **kwargs)
        cost = self._cost(args, kwargs)
        gate = gate_for(self.app)
        ticket = Ticket.loads(ticket_header(self.request))
        state = arrival(self.app, self.request, ticket)
        if state == STALE:
            raise Ignore()  # acknowledged: its latest copy is elsewhere
        if state == UNCHECKED:  # round again through the broker, with the same token
            again = gate.rate_limited(integration, tenant, ticket, 2.0, reason=BACKEND_UNAVAILABLE)
            raise self._requeue(again, ticket)
        info = context.TaskInfo(self.name, self.request.id)
        with context.running(info):
            verdict = gate.before(
                integration,
                tenant,
                ticket,
                max_wait=self.max_wait,
                budget=self.requeue_budget,
                cost=cost,
            )
        if isinstance(verdict, Requeue):
            raise self._requeue(verdict, ticket)
        slot = context.Prepaid(integration, tenant, verdict.decision, cost)
        return self._run(verdict, gate, slot, ticket, info, args, kwargs)

    def _run(
        self,
        verdict: Run,
        gate: TaskGate,
        slot: context.Prepaid,
        ticket: Ticket,
        info: context.TaskInfo,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        decision, integration, tenant = verdict.decision, slot.integration, slot.tenant
        if decision.wait > 0:
            time.sleep(decision.wait)
        try:
            with context.running(info, slot, context.hand_over):
                return super().__call__(*args, **kwargs)
        except (Backoff, RateLimited) as caught:  # RateLimited: raised past the clients' hook
            exc = caught.exc if isinstance(caught, Backoff) else caught
            with context.running(info):
                requeue = gate.rate_limited(
                    integration,
                    tenant,
                    ticket,
                    exc.retry_after,
                    budget=self.requeue_budget,
                    reason=exc.reason,
                )
                raise self._requeue(requeue, ticket) from exc
        finally:
            gate.release_unused(slot)

    def rate_limited(self, retry_after: float, *, report: bool = True) -> Backoff:
        """``raise`` what this returns to requeue the task after ``retry_after`` seconds.

        With ``report`` the limiter also learns of the backoff (slowing every worker), as
        part of the same congestion event as the task's own slot. What it returns is a
        ``BaseException``, so neither ``except Exception`` in the body nor ``autoretry_for``
        can swallow the requeue.
        """
        integration = self._integration()
        slot = context.prepaid.get()
        if slot is None or slot.integration != integration:  # called outside its own run
            tenant = self.tenant(*self.request.args, **(self.request.kwargs or {}))
            if report:
                gate_for(self.app).limiter.on_backoff(integration, tenant, retry_after=retry_after)
            return Backoff(RateLimited(retry_after, integration, tenant))
        if report:
            gate_for(self.app).report_backoff(slot, retry_after)
        return Backoff(RateLimited(retry_after, integration, slot.tenant))

    def _requeue(self, requeue: Requeue, delivered: Ticket) -> Retry:
        """Send the same task (same id and retries) for later: into the due set when the app
        has one (``celery_due``), else to the broker with a countdown. The Retry to raise."""
        due = due_for(self.app)
        if due is not None:
            parked = self._park(due, requeue, delivered)
            if parked is not None:
                return parked
        ticket = replace(requeue.ticket, copy=delivered.copy)  # no new copy: same token
        signature = self._again(ticket, requeue.countdown)
        signature.apply_async()
        return _retry(requeue, requeue.countdown, signature, self._integration())

    def _park(self, due: DueTasks, requeue: Requeue, delivered: Ticket) -> Retry | None:
        """Park the task's next copy in the due set for all of its wait; ``None`` when Redis
        does not answer (the broker takes it then)."""
        wait = requeue.wait  # no parking hops: Redis holds it as long as it must wait
        new = uuid.uuid4().hex
        signature = self._again(replace(requeue.ticket, not_before=None, copy=new), None)
        try:
            message = encode(self.app, signature, self.serializer)
        except Exception:  # the broker's serializer may still manage: it takes the task
            log.warning("queue_ratelimit: task %s: not parked", self.request.id, exc_info=True)
            return None
        fresh = first_delivery(self.request)
        try:
            parked = due.park(self.request.id, delivered.copy, new, wait, message, fresh=fresh)
        except BackendError:
            return None
        if not parked:  # this delivery is itself a stale copy
            raise Ignore()
        return _retry(requeue, wait, signature, self._integration())

    def _again(self, ticket: Ticket, countdown: float | None) -> Any:
        """The signature of the task's next copy, carrying ``ticket``."""
        request = self.request
        headers = {**(request.headers or {}), TICKET_HEADER: ticket.dumps()}
        return self.signature_from_request(
            request, countdown=countdown, retries=request.retries, headers=headers
        )

    def _integration(self) -> str:
        if not self.integration:
            raise ConfigError(None, "integration", self.integration, f"task {self.name} has none")
        return self.integration


def _retry(requeue: Requeue, countdown: float, signature: Any, integration: str) -> Retry:
    exc = RateLimited(countdown, integration)
    return Retry(f"requeued ({requeue.reason})", exc=exc, when=countdown, sig=signature)


def _takes_self(function: Any) -> bool:
    params = list(inspect.signature(function).parameters)
    return bool(params) and params[0] == "self"


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
    requeued tasks then wait in Redis until due (``celery_due``)."""
    app.steps["consumer"].add(BreakerStep)
    app.steps["consumer"].add(PromoteStep)
    enable(app)

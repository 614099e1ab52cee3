"""Dramatiq: ``RateLimitMiddleware``: requeues that spare ``Retries``; a breaker that pauses queues.

::

    broker = RedisBroker(url="redis://localhost:6379/0")
    broker.add_middleware(RateLimitMiddleware(Limiter(RedisBackend("redis://localhost:6379/1"))))
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="notion", integration="notion", tenant=lambda ws, page: ws)
    def sync_page(ws, page): ...

Actor options are ``queue_ratelimit.runner.TaskLimits``'s fields (``requeue_budget`` and
``max_wait`` also per message, via ``send_with_options``). The message is admitted in
``before_process_message`` and its body runs through ``queue_ratelimit.runner``; a requeue
ends the delivery with ``SkipMessage`` (``Retries`` never sees it) and its copy (same
``message_id``) is published in ``after_skip_message``, before the delivery is acknowledged
(``dramatiq_delivery``). Queues are paused while their integration's breaker is open
(``dramatiq_breaker``). See docs/dramatiq.md.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

from dramatiq.actor import Actor
from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import MiddlewareError
from dramatiq.worker import Worker

from queue_ratelimit.context import TaskInfo
from queue_ratelimit.errors import ConfigError, QuotaSpent
from queue_ratelimit.integrations.dramatiq_breaker import QueuePausing
from queue_ratelimit.integrations.dramatiq_crowd import LocalWork
from queue_ratelimit.integrations.dramatiq_delivery import (
    TICKET_OPTION,
    Delivery,
    QuietSkips,
    Skip,
    current,
    end,
    gated,
    stale,
)
from queue_ratelimit.integrations.due import due_tasks
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.runner import OPTIONS, TaskLimits, TaskRun, requeue_after
from queue_ratelimit.tasks import TaskCall, TaskGate, Ticket

__all__ = ["TICKET_OPTION", "RateLimitMiddleware", "limiter_for", "rate_limited"]

log = logging.getLogger(__name__)


class _InvalidActor(ConfigError, MiddlewareError):
    """An actor's rate-limit options are invalid (a ``MiddlewareError``, so Dramatiq raises it)."""


class RateLimitMiddleware(QueuePausing):
    """Runs each message of an actor with an ``integration`` only with a slot from ``limiter``.

    Args:
        limiter: the shared limiter.
        max_countdown: the longest delay given to the broker; longer waits are parked in hops
            (RabbitMQ closes a channel holding a delayed message longer than its
            ``consumer_timeout``, 30 min by default).
        poll: seconds between the breaker checks of each worker.
        jitter: the delay of a requeue without a reserved slot grows by up to this fraction
            (at most 5 s); see ``TaskGate``.
        consumer_backoff: seconds; at worker boot the worker's ``worker_timeout`` (1 s by
            default) is lowered to this, never raised; ``None`` leaves it. A consumer whose
            prefetch is full (its messages' threads sleeping for their slots) gets nothing
            from each fetch and backs off up to that timeout, so after a cooldown the next
            message would wait up to 1 s for it.
        crowded_wait: seconds; the longest a task sleeps for its slot while a message of
            another integration (or of an ungated actor) waits in the same worker process
            for a thread: a longer wait requeues the task, its slot reserved; a sleeper
            that such a message comes to wait behind is requeued (``yielded``) and the
            thread takes the message (``dramatiq_crowd``). ``None``: never.

    Raises:
        ConfigError: ``max_countdown`` or ``poll`` is not > 0, ``consumer_backoff`` is
            below 0.01 (Dramatiq's backoff would round to no sleep: a busy loop), or
            ``crowded_wait`` is below 0.
    """

    def __init__(
        self,
        limiter: Limiter,
        *,
        max_countdown: float = 600.0,
        poll: float = 1.0,
        jitter: float = 0.1,
        consumer_backoff: float | None = 0.1,
        crowded_wait: float | None = 0.1,
    ) -> None:
        for name, value, least, zero in (  # zero: the value may be 0
            ("max_countdown", max_countdown, 0.0, False),
            ("poll", poll, 0.0, False),
            (
                "consumer_backoff",
                0.01 if consumer_backoff is None else consumer_backoff,
                0.01,
                False,
            ),
            ("crowded_wait", 0.0 if crowded_wait is None else crowded_wait, 0.0, True),
        ):
            number = not isinstance(value, bool) and isinstance(value, int | float)
            if not number or not value >= least or (value <= 0 and not zero):
                reason = f"must be >= {least:g}" if least or zero else "must be > 0"
                raise ConfigError(None, name, value, reason)
        self.gate = TaskGate(limiter, max_countdown=float(max_countdown), jitter=jitter)
        self.due = due_tasks(limiter, "dramatiq")  # tells stale copies (limiter on Redis)
        self.poll = float(poll)
        self.consumer_backoff = consumer_backoff
        self.crowded_wait = None if crowded_wait is None else float(crowded_wait)
        self._local: LocalWork | None = None  # the worker process's, once it boots
        super().__init__()
        QuietSkips.install()

    @property
    def limiter(self) -> Limiter:
        """The limiter the gated actors use (for HTTP clients and operator calls)."""
        return self.gate.limiter

    @property
    def actor_options(self) -> set[str]:
        return set(OPTIONS)

    def before_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        """Reject invalid options when the actor is declared (at import), not per message."""
        limits = _limits(actor)
        if limits is not None:
            try:
                limits.check(self.limiter, f"actor {actor.actor_name}")
            except ConfigError as exc:
                raise _InvalidActor(exc.integration, exc.field, exc.value, exc.reason) from exc

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        """Run the body of a gated actor's messages through the task runner; end any
        actor's message on ``QuotaSpent`` (Dramatiq calls this for the actors declared
        before the middleware was added, too)."""
        _refusals_end(actor)
        if actor.options.get("integration"):
            gated(actor)

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        super().before_worker_boot(broker, worker)
        self._local = LocalWork(broker, worker, self.busy)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """Acquire; sleep a short wait, or end the delivery (``SkipMessage``) to requeue it."""
        self.take(message)
        actor = broker.get_actor(message.actor_name)
        limits = _limits(actor)
        if limits is None or message.failed:
            return
        ticket = Ticket.loads(message.options.get(TICKET_OPTION))
        info = TaskInfo(message.actor_name, message.message_id)
        run = TaskRun(self.gate, TaskCall(limits.integration), ticket, info)
        delivery = Delivery(run, message, self.due)
        current.set(delivery)
        try:
            if stale(self.due, message, ticket):
                raise delivery.drop()
            run.call = limits.call(message.args, message.kwargs, message.options)
            self._crowding(run)
            requeue = run.admit()
        except Skip:
            raise
        except Exception as exc:  # the budget, the limiter's backend, a tenant function:
            raise delivery.fail(exc) from exc  # raised on, Dramatiq would run the body unguarded
        if requeue is not None:
            if self._local is not None:  # (crowding weighs it: this integration runs later)
                self._local.hold(limits.integration, requeue.wait)
            raise delivery.requeue(requeue)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """The body ended (``Retries`` and ``Results`` see it as usual)."""
        delivery = end(message)
        if delivery is not None:
            delivery.run.end()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """Publish the requeue, or record the typed error, before the delivery is settled."""
        delivery = end(message)
        if delivery is not None:
            delivery.settle(broker)

    def _crowding(self, run: TaskRun) -> None:
        """While another integration's message waits in this process for a thread, the
        run sleeps at most ``crowded_wait``; one that comes to wait meanwhile ends a longer
        sleep (see ``dramatiq_crowd``)."""
        local, most = self._local, self.crowded_wait
        if local is None or most is None or run.ticket.requeues >= self.gate.budget(run.call):
            return  # on its last chance a task sleeps its wait rather than fail for it
        integration = run.call.integration
        if local.others_waiting(integration, most):
            run.call = run.call.within(most, self.limiter.config(integration))
        else:
            run.pause = functools.partial(local.pause, integration, most)


def rate_limited(retry_after: float, *, report: bool = True) -> BaseException:
    """Deprecated: ``raise queue_ratelimit.requeue_after(retry_after)`` instead."""
    warnings.warn(
        "queue_ratelimit.integrations.dramatiq.rate_limited() is deprecated: raise "
        "queue_ratelimit.requeue_after(retry_after) instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return requeue_after(retry_after, report=report)


def limiter_for(broker: Broker) -> Limiter:
    """The limiter of the broker's ``RateLimitMiddleware`` (for HTTP clients and operator
    calls); ``ConfigError`` when the broker has none."""
    for middleware in broker.middleware:
        if isinstance(middleware, RateLimitMiddleware):
            return middleware.limiter
    raise ConfigError(None, "middleware", None, "the broker has no RateLimitMiddleware")


def _refusals_end(actor: Actor[Any, Any]) -> None:
    """``QuotaSpent`` ends a message (``Retries``' ``throws``, added to the actor's own): a
    spent credit or plan quota is not mended by calling again."""
    throws = actor.options.get("throws")
    if throws is None:
        actor.options["throws"] = (QuotaSpent,)
    elif isinstance(throws, tuple) and QuotaSpent not in throws:
        actor.options["throws"] = (*throws, QuotaSpent)
    elif isinstance(throws, type) and not issubclass(QuotaSpent, throws):
        actor.options["throws"] = (throws, QuotaSpent)


def _limits(actor: Actor[Any, Any]) -> TaskLimits | None:
    """The actor's limits; None when it names no integration (``_InvalidActor`` when it sets
    other rate-limit options without one, or an option is invalid)."""
    options = actor.options
    integration = options.get("integration")
    if integration is None:
        if OPTIONS & options.keys():
            where = f"actor {actor.actor_name} sets rate-limit options"
            raise _InvalidActor(None, "integration", None, where)
        return None
    given = {name: options[name] for name in OPTIONS if name in options}
    try:
        return TaskLimits(**given)
    except ConfigError as exc:
        reason = f"actor {actor.actor_name}: {exc.reason}"
        raise _InvalidActor(exc.integration, exc.field, exc.value, reason) from exc

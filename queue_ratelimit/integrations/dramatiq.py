"""Dramatiq: ``RateLimitMiddleware``: requeues that spare ``Retries``; a breaker that pauses queues.

::

    broker = RedisBroker(url="redis://localhost:6379/0")
    broker.add_middleware(RateLimitMiddleware(Limiter(RedisBackend("redis://localhost:6379/1"))))
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="notion", integration="notion", tenant=lambda ws, page: ws)
    def sync_page(ws, page): ...

Actor options (``requeue_budget`` and ``max_wait`` also per message, via
``send_with_options``): ``integration`` (required to be gated), ``tenant`` (a string, or a
function of the message's arguments), ``cost`` (what a run spends: a number of requests,
``{limit: units}``, or a function of the message's arguments giving one), ``requeue_budget``,
``max_wait``.

In ``before_process_message`` the message acquires; a short wait is slept, a longer one
sends it back to the broker (same ``message_id``, delayed until its reserved slot,
its ``Ticket`` in the ``queue_ratelimit`` option) and ``SkipMessage`` acknowledges the
current delivery. A ``RateLimited`` met in the body (the project's HTTP clients hand it to
the message's hook, or ``raise rate_limited(retry_after=...)``) does the same with the
upstream's ``Retry-After``. A skipped message never reaches ``Retries``, so
``message.options["retries"]`` stays unchanged. The copy is published in
``after_skip_message``, before the delivery is acknowledged. After ``requeue_budget`` requeues,
or when the limiter itself fails, the message is failed (the dead-letter queue) with the
typed error stuffed in, where ``Results`` stores it.

``after_worker_boot`` starts a thread that pauses the consumer of each queue named like an
integration while that integration's breaker is open (the messages stay in the broker),
and resumes it when the probe is due.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dramatiq.actor import Actor
from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import q_name
from dramatiq.middleware import Middleware, MiddlewareError
from dramatiq.worker import Worker

from queue_ratelimit import context
from queue_ratelimit.errors import (
    BackendError,
    ConfigError,
    InvalidRequest,
    RateLimited,
)
from queue_ratelimit.integrations.dramatiq_breaker import BreakerWatch
from queue_ratelimit.integrations.dramatiq_delivery import (
    TICKET_OPTION,
    Delivery,
    Skip,
    current,
    end,
    first_delivery,
)
from queue_ratelimit.integrations.due import due_tasks
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import Cost
from queue_ratelimit.tasks import Requeue, TaskGate, Ticket

__all__ = ["TICKET_OPTION", "RateLimitMiddleware", "rate_limited"]

log = logging.getLogger(__name__)


_OPTIONS = frozenset({"integration", "tenant", "cost", "requeue_budget", "max_wait"})


class _InvalidActor(ConfigError, MiddlewareError):
    """An actor's rate-limit options are invalid (a ``MiddlewareError``, so Dramatiq raises it)."""


class RateLimitMiddleware(Middleware):
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

    Raises:
        ConfigError: ``max_countdown`` or ``poll`` is not > 0, or ``consumer_backoff`` is
            below 0.01 (Dramatiq's backoff would round to no sleep: a busy loop).
    """

    def __init__(
        self,
        limiter: Limiter,
        *,
        max_countdown: float = 600.0,
        poll: float = 1.0,
        jitter: float = 0.1,
        consumer_backoff: float | None = 0.1,
    ) -> None:
        for name, value, least in (
            ("max_countdown", max_countdown, 0.0),
            ("poll", poll, 0.0),
            ("consumer_backoff", 0.01 if consumer_backoff is None else consumer_backoff, 0.01),
        ):
            number = not isinstance(value, bool) and isinstance(value, int | float)
            if not number or value < least or value <= 0:
                raise ConfigError(
                    None, name, value, f"must be >= {least:g}" if least else "must be > 0"
                )
        self.gate = TaskGate(limiter, max_countdown=float(max_countdown), jitter=jitter)
        self.due = due_tasks(limiter, "dramatiq")  # tells stale copies (limiter on Redis)
        self.poll = float(poll)
        self.consumer_backoff = consumer_backoff
        self._taken: dict[int, str] = {}  # id(message) -> queue, until acked or nacked
        self._lock = threading.Lock()
        self._watch: BreakerWatch | None = None

    @property
    def limiter(self) -> Limiter:
        """The limiter the gated actors use (for HTTP clients and operator calls)."""
        return self.gate.limiter

    @property
    def actor_options(self) -> set[str]:
        return set(_OPTIONS)

    def before_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        """Reject invalid options when the actor is declared (at import), not per message."""
        _validate(self.limiter, actor)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """Acquire; sleep a short wait, or end the delivery (``SkipMessage``) to requeue it."""
        with self._lock:
            self._taken[id(message)] = q_name(message.queue_name)
        actor = broker.get_actor(message.actor_name)
        integration = actor.options.get("integration")
        if not integration or message.failed:
            return
        delivery = Delivery(self.gate, message, integration, self.due)
        current.set(delivery)
        try:
            delivery.tenant = _tenant(actor, message)
            delivery.cost = _cost(actor, message)
            delivery.ticket = Ticket.loads(message.options.get(TICKET_OPTION))
            if self._stale(message, delivery.ticket):
                raise delivery.drop()
            delivery.budget = _option(actor, message, "requeue_budget")
            with context.running(delivery.info):
                verdict = self.gate.before(
                    integration,
                    delivery.tenant,
                    delivery.ticket,
                    max_wait=_option(actor, message, "max_wait"),
                    budget=delivery.budget,
                    cost=delivery.cost,
                )
        except Skip:
            raise
        except Exception as exc:  # the budget, the limiter's backend, a tenant function:
            raise delivery.fail(exc) from exc  # raised on, Dramatiq would run the body unguarded
        if isinstance(verdict, Requeue):
            raise delivery.requeue(verdict)
        delivery.run(verdict.decision)

    def _stale(self, message: MessageProxy, ticket: Ticket) -> bool:
        """A copy (or a delivery the broker made before) that is not its message's latest.
        The Redis broker says nothing of redeliveries: every delivery is checked there."""
        if self.due is None or first_delivery(message):
            return False
        try:
            return not self.due.check(message.message_id, ticket.copy)
        except BackendError:
            return False  # Redis is down: it runs (at least once)

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
            delivery.finish()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """Publish the requeue, or record the typed error, before the delivery is settled."""
        delivery = end(message)
        if delivery is not None:
            delivery.settle(broker)

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._taken.pop(id(message), None)

    after_nack = after_ack

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        """Lower the worker's timeout to ``consumer_backoff`` before its consumers start."""
        if self.consumer_backoff is not None:
            ms = round(self.consumer_backoff * 1000)
            worker.worker_timeout = min(worker.worker_timeout, ms)

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        """Start pausing the queues whose integration's breaker is open."""
        self._watch = BreakerWatch(
            self.limiter, worker, self.poll, lambda queue: self._idle(worker, queue)
        )
        self._watch.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def _idle(self, worker: Worker, queue: str) -> bool:
        """No message of ``queue`` is waiting in ``worker`` or unsettled (safe to pause)."""
        with self._lock:
            if queue in self._taken.values():
                return False
        with worker.work_queue.mutex:
            return all(q_name(item.message.queue_name) != queue for item in worker.work_queue.queue)


def rate_limited(retry_after: float, *, report: bool = True) -> Exception:
    """Requeue the running message after ``retry_after`` seconds; ``raise`` what this returns.

    With ``report`` the limiter also learns of the backoff (slowing every worker). Outside a
    gated message it is a plain ``RateLimited``.
    """
    delivery = current.get()
    if delivery is None or delivery.slot is None:
        return RateLimited(retry_after)
    if report:
        delivery.gate.report_backoff(delivery.slot, retry_after)
    return delivery.rate_limited(retry_after)


def _option(actor: Actor[Any, Any], message: MessageProxy, name: str) -> Any:
    """A message's own option over its actor's; None: the integration's config decides."""
    return message.options.get(name, actor.options.get(name))


def _tenant(actor: Actor[Any, Any], message: MessageProxy) -> str | None:
    tenant = actor.options.get("tenant")
    if callable(tenant):
        return tenant(*message.args, **message.kwargs)  # type: ignore[no-any-return]
    return tenant


def _cost(actor: Actor[Any, Any], message: MessageProxy) -> Cost:
    cost = actor.options.get("cost", 1.0)
    if callable(cost):
        return cost(*message.args, **message.kwargs)  # type: ignore[no-any-return]
    return cost  # type: ignore[no-any-return]


def _validate(limiter: Limiter, actor: Actor[Any, Any]) -> None:
    options = actor.options
    integration = options.get("integration")
    where = f"actor {actor.actor_name}"
    if integration is None:
        if _OPTIONS & options.keys():
            raise _InvalidActor(None, "integration", None, f"{where} sets rate-limit options")
        return
    try:
        limiter.config(integration)
    except ConfigError as exc:
        raise _InvalidActor(integration, "integration", integration, str(exc)) from exc
    tenant = options.get("tenant")
    if tenant is not None and not callable(tenant) and not (isinstance(tenant, str) and tenant):
        raise _InvalidActor(integration, "tenant", tenant, f"{where}: a string or a function")
    cost = options.get("cost")
    if cost is not None and not callable(cost):
        try:
            limiter.costs(integration, cost)
        except (InvalidRequest, TypeError) as exc:
            raise _InvalidActor(integration, "cost", cost, f"{where}: {exc}") from exc
    for name, kinds, what in (
        ("requeue_budget", int, "an int"),
        ("max_wait", int | float, "seconds"),
    ):
        value = options.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, kinds) or value < 0
        ):
            raise _InvalidActor(integration, name, value, f"{where}: {what} >= 0")

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
import time
from contextlib import ExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NoReturn

from dramatiq.actor import Actor
from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import q_name
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage
from dramatiq.worker import Worker

from queue_ratelimit import context
from queue_ratelimit.errors import ConfigError, InvalidRequest, RateLimited, RequeueBudgetExhausted
from queue_ratelimit.integrations.dramatiq_breaker import BreakerWatch
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import Cost
from queue_ratelimit.policy.state import Decision
from queue_ratelimit.tasks import TICKET_HEADER, Requeue, TaskGate, Ticket

__all__ = ["TICKET_OPTION", "RateLimitMiddleware", "rate_limited"]

log = logging.getLogger(__name__)

TICKET_OPTION = TICKET_HEADER
"""The message option that carries a requeued message's :class:`~queue_ratelimit.tasks.Ticket`."""

_OPTIONS = frozenset({"integration", "tenant", "cost", "requeue_budget", "max_wait"})
_UNSET: Any = object()


class _Skip(SkipMessage):
    """Ends a delivery without the body's result: requeued, or failed with a typed error."""


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
        delivery = _Delivery(self.gate, message, integration)
        _current.set(delivery)
        try:
            delivery.tenant = _tenant(actor, message)
            delivery.cost = _cost(actor, message)
            delivery.ticket = Ticket.loads(message.options.get(TICKET_OPTION))
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
        except Exception as exc:  # the budget, the limiter's backend, a tenant function:
            raise delivery.fail(exc) from exc  # raised on, Dramatiq would run the body unguarded
        if isinstance(verdict, Requeue):
            raise delivery.requeue(verdict)
        delivery.run(verdict.decision)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """The body ended (``Retries`` and ``Results`` see it as usual)."""
        delivery = _end(message)
        if delivery is not None:
            delivery.finish()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """Publish the requeue, or record the typed error, before the delivery is settled."""
        delivery = _end(message)
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
    delivery = _current.get()
    if delivery is None or delivery.slot is None:
        return RateLimited(retry_after)
    if report:
        delivery.gate.report_backoff(delivery.slot, retry_after)
    return delivery.rate_limited(retry_after)


@dataclass
class _Delivery:
    """One gated message in its worker thread, from ``before_process_message`` to its end."""

    gate: TaskGate
    message: MessageProxy
    integration: str
    tenant: str | None = None
    cost: Cost = 1.0
    ticket: Ticket = field(default_factory=Ticket)
    budget: int | None = None
    slot: context.Prepaid | None = None
    scope: ExitStack = field(default_factory=ExitStack)
    outcome: Requeue | BaseException | None = None
    stored: Any = _UNSET  # the message's own store_results option, hidden while requeued

    @property
    def info(self) -> context.TaskInfo:
        return context.TaskInfo(self.message.actor_name, self.message.message_id)

    def run(self, decision: Decision) -> None:
        """Sleep the granted wait, then set the body's context (prepaid slot, backoff hook)."""
        if decision.wait > 0:
            time.sleep(decision.wait)
        self.slot = context.Prepaid(self.integration, self.tenant, decision, self.cost)
        self.scope.enter_context(context.running(self.info, self.slot, self._hook))

    def _hook(self, exc: RateLimited) -> NoReturn:
        raise self.rate_limited(exc.retry_after, exc.reason) from exc

    def rate_limited(self, retry_after: float, reason: str = "backoff") -> SkipMessage:
        if self.outcome is not None:  # the body caught the first one: that one stands
            return _Skip("already ended")
        try:
            requeue = self.gate.rate_limited(
                self.integration,
                self.tenant,
                self.ticket,
                retry_after,
                budget=self.budget,
                reason=reason,
            )
        except RequeueBudgetExhausted as exc:
            return self.fail(exc)
        return self.requeue(requeue)

    def requeue(self, requeue: Requeue) -> SkipMessage:
        """Requeue once the delivery ends; ``Results`` must not store a result meanwhile."""
        self.outcome = requeue
        self.stored = self.message.options.get("store_results", _UNSET)
        self.message.options["store_results"] = False
        return _Skip(f"requeued ({requeue.reason}) for {requeue.countdown:.3f}s")

    def fail(self, exc: Exception) -> SkipMessage:
        """Dead-letter the message with ``exc``; ``Retries`` never sees it."""
        if isinstance(exc, RequeueBudgetExhausted):
            log.warning("queue_ratelimit: %s: %s", self.message, exc)
        else:
            log.error("queue_ratelimit: %s failed", self.message, exc_info=exc)
        self.outcome = exc
        self.message.fail()
        self.message.stuff_exception(exc)
        return _Skip(f"failed: {type(exc).__name__}: {exc}")

    def finish(self) -> None:
        """The body ended: a requeue it caught (and went on after) is dropped."""
        self._leave()
        if isinstance(self.outcome, Requeue):
            log.warning("queue_ratelimit: %s caught its requeue: not requeued", self.message)
            self._unhide(self.message.options)

    def settle(self, broker: Broker) -> None:
        """The delivery was skipped: publish the requeue, or put back the typed error."""
        self._leave()
        if isinstance(self.outcome, BaseException):
            self.message.stuff_exception(self.outcome)  # the worker stuffed SkipMessage
        elif isinstance(self.outcome, Requeue):
            try:
                self._publish(broker, self.outcome)
            except Exception as exc:  # acknowledging now would lose the message
                self._unhide(self.message.options)
                self.fail(exc)

    def _leave(self) -> None:
        """Leave the body's context; give back a lease no call used."""
        self.scope.close()
        slot = self.slot
        if slot is not None:
            try:
                self.gate.release_unused(slot)
            except Exception:
                log.exception("queue_ratelimit: releasing the lease of %s failed", self.message)

    def _publish(self, broker: Broker, requeue: Requeue) -> None:
        message = self.message
        copy = message.copy(
            queue_name=q_name(message.queue_name),
            options={TICKET_OPTION: requeue.ticket.dumps()},
        )
        self._unhide(copy.options)
        delay = round(requeue.countdown * 1000)
        broker.enqueue(copy, delay=delay if delay > 0 else None)

    def _unhide(self, options: dict[str, Any]) -> None:
        if self.stored is _UNSET:
            options.pop("store_results", None)
        else:
            options["store_results"] = self.stored


_current: ContextVar[_Delivery | None] = ContextVar("queue_ratelimit_delivery", default=None)


def _end(message: MessageProxy) -> _Delivery | None:
    delivery = _current.get()
    _current.set(None)
    return delivery if delivery is not None and delivery.message is message else None


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

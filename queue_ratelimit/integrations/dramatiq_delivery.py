"""Dramatiq: one gated message in its worker thread, from ``before_process_message`` to the
end of its delivery (run, requeued, dropped as a stale copy, or failed with a typed error).

The run itself is ``queue_ratelimit.runner.TaskRun``: admitted in ``before_process_message``,
its body run by :func:`gated` (the actor's ``fn``, wrapped when the actor is declared), which
turns a requeue into ``SkipMessage``.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from dramatiq.actor import Actor
from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import q_name
from dramatiq.middleware import SkipMessage

from queue_ratelimit.errors import BackendError, RequeueBudgetExhausted
from queue_ratelimit.integrations.due import DueTasks
from queue_ratelimit.runner import TaskRun
from queue_ratelimit.tasks import TICKET_HEADER, Requeue, Ticket

__all__ = [
    "TICKET_OPTION",
    "Delivery",
    "QuietSkips",
    "Skip",
    "current",
    "end",
    "first_delivery",
    "gated",
    "stale",
]

log = logging.getLogger("queue_ratelimit.integrations.dramatiq")

TICKET_OPTION = TICKET_HEADER
"""The message option that carries a requeued message's :class:`~queue_ratelimit.tasks.Ticket`."""


def first_delivery(message: MessageProxy) -> bool:
    """An original's first delivery: no ticket, and RabbitMQ delivers it the first time (the
    Redis broker does not say: never taken for one)."""
    redelivered = getattr(message, "redelivered", True)  # RabbitMQ's messages have it
    return not redelivered and TICKET_OPTION not in message.options


def stale(due: DueTasks | None, message: MessageProxy, ticket: Ticket) -> bool:
    """A copy (or a delivery the broker made before) that is not its message's latest.
    The Redis broker says nothing of redeliveries: every delivery is checked there."""
    if due is None or first_delivery(message):
        return False
    try:
        return not due.check(message.message_id, ticket.copy)
    except BackendError:
        return False  # Redis is down: it runs (at least once)


_UNSET: Any = object()
_STALE = "stale"
_GATED = "__queue_ratelimit_gated__"


class Skip(SkipMessage):
    """Ends a delivery without the body's result: requeued, or failed with a typed error."""


@dataclass
class Delivery:
    """One gated message in its worker thread, from ``before_process_message`` to its end."""

    run: TaskRun
    message: MessageProxy
    due: DueTasks | None = None
    entered: bool = False
    outcome: Requeue | BaseException | str | None = None
    stored: Any = _UNSET  # the message's own store_results option, hidden while requeued

    def requeue(self, requeue: Requeue) -> SkipMessage:
        """Requeue once the delivery ends; ``Results`` must not store a result meanwhile."""
        _quiet.set(id(self.message))  # the gate logged it: not Dramatiq's "skipped" too
        self.outcome = requeue
        self.stored = self.message.options.get("store_results", _UNSET)
        self.message.options["store_results"] = False
        return Skip(f"requeued ({requeue.reason}) for {requeue.countdown:.3f}s")

    def drop(self) -> SkipMessage:
        """A stale copy: acknowledged, with nothing stored or published."""
        _quiet.set(id(self.message))
        log.debug("queue_ratelimit: %s is a stale copy: dropped", self.message)
        self.outcome = _STALE
        self.message.options["store_results"] = False
        return Skip("stale copy")

    def fail(self, exc: Exception) -> SkipMessage:
        """Dead-letter the message with ``exc``; ``Retries`` never sees it."""
        if isinstance(exc, RequeueBudgetExhausted):
            log.warning("queue_ratelimit: %s: %s", self.message, exc)
        else:
            log.error("queue_ratelimit: %s failed", self.message, exc_info=exc)
        _quiet.set(id(self.message))  # said above, as what it is
        self.outcome = exc
        self.message.fail()
        self.message.stuff_exception(exc)
        return Skip(f"failed: {type(exc).__name__}: {exc}")

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
        """Give back a lease no call used (when the body never ran)."""
        try:
            self.run.end()
        except Exception:
            log.exception("queue_ratelimit: releasing the lease of %s failed", self.message)

    def _publish(self, broker: Broker, requeue: Requeue) -> None:
        """Publish the copy; with Redis, first mark it pending (``integrations.due``)."""
        message, delivered = self.message, self.run.ticket
        ticket = replace(requeue.ticket, copy=delivered.copy)
        if self.due is not None:
            new = uuid.uuid4().hex
            try:
                fresh = first_delivery(message)
                if not self.due.park(message.message_id, ticket.copy, new, 0.0, None, fresh=fresh):
                    return  # this delivery is itself a stale copy
                ticket = replace(ticket, copy=new)
            except BackendError:  # Redis is down: the copy keeps this delivery's token
                pass
        copy = message.copy(
            queue_name=q_name(message.queue_name),
            options={TICKET_OPTION: ticket.dumps()},
        )
        self._unhide(copy.options)
        delay = round(requeue.countdown * 1000)
        broker.enqueue(copy, delay=delay if delay > 0 else None)

    def _unhide(self, options: dict[str, Any]) -> None:
        if self.stored is _UNSET:
            options.pop("store_results", None)
        else:
            options["store_results"] = self.stored


_quiet: ContextVar[int | None] = ContextVar("queue_ratelimit_quiet_skip", default=None)
"""The message this worker thread ended itself (Dramatiq logs its skip in the same thread)."""


class QuietSkips(logging.Filter):
    """Drops Dramatiq's "Message ... was skipped." warning for the messages this integration
    ended (requeued, a stale copy dropped, failed with its typed error): each is logged once,
    as what it is. Installed on Dramatiq's worker-thread logger by the middleware."""

    @classmethod
    def install(cls) -> None:
        """On Dramatiq's worker-thread logger, once."""
        skips = logging.getLogger("dramatiq.worker.WorkerThread")
        if not any(isinstance(f, cls) for f in skips.filters):
            skips.addFilter(cls())

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg == "Message %s was skipped." and isinstance(args, tuple) and args:
            return id(args[0]) != _quiet.get()
        return True


current: ContextVar[Delivery | None] = ContextVar("queue_ratelimit_delivery", default=None)


def end(message: MessageProxy) -> Delivery | None:
    """The delivery of ``message`` in this thread, which ends now."""
    delivery = current.get()
    current.set(None)
    _quiet.set(None)
    return delivery if delivery is not None and delivery.message is message else None


def gated(actor: Actor[Any, Any]) -> None:
    """Wrap ``actor.fn`` so that the admitted delivery of its own message runs it through the
    task runner (once; a direct call, or another actor called from a body, runs as it is)."""
    fn: Callable[..., Any] = actor.fn
    if getattr(fn, _GATED, None) == actor.actor_name:  # wrapped for this actor already
        return

    @functools.wraps(fn)
    def body(*args: Any, **kwargs: Any) -> Any:
        delivery = current.get()
        if delivery is None or delivery.entered or delivery.message.actor_name != actor_name:
            return fn(*args, **kwargs)
        delivery.entered = True
        try:
            outcome = delivery.run.run_admitted(functools.partial(fn, *args, **kwargs))
        except RequeueBudgetExhausted as exc:
            raise delivery.fail(exc) from exc
        if isinstance(outcome, Requeue):
            raise delivery.requeue(outcome)
        return outcome

    actor_name = actor.actor_name
    setattr(body, _GATED, actor_name)
    actor.fn = body

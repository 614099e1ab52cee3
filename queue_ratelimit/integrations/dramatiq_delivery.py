"""Dramatiq: one gated message in its worker thread, from ``before_process_message`` to the
end of its delivery (run, requeued, dropped as a stale copy, or failed with a typed error)."""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import ExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import q_name
from dramatiq.middleware import SkipMessage

from queue_ratelimit import context
from queue_ratelimit.errors import BackendError, RateLimited, RequeueBudgetExhausted
from queue_ratelimit.integrations.due import DueTasks
from queue_ratelimit.plans import Cost
from queue_ratelimit.policy.state import Decision
from queue_ratelimit.tasks import TICKET_HEADER, Requeue, TaskGate, Ticket

__all__ = ["TICKET_OPTION", "Delivery", "Skip", "current", "end", "first_delivery"]

log = logging.getLogger("queue_ratelimit.integrations.dramatiq")

TICKET_OPTION = TICKET_HEADER
"""The message option that carries a requeued message's :class:`~queue_ratelimit.tasks.Ticket`."""


def first_delivery(message: MessageProxy) -> bool:
    """An original's first delivery: no ticket, and RabbitMQ delivers it the first time (the
    Redis broker does not say: never taken for one)."""
    redelivered = getattr(message, "redelivered", True)  # RabbitMQ's messages have it
    return not redelivered and TICKET_OPTION not in message.options


_UNSET: Any = object()
_STALE = "stale"


class Skip(SkipMessage):
    """Ends a delivery without the body's result: requeued, or failed with a typed error."""


@dataclass
class Delivery:
    """One gated message in its worker thread, from ``before_process_message`` to its end."""

    gate: TaskGate
    message: MessageProxy
    integration: str
    due: DueTasks | None = None
    tenant: str | None = None
    cost: Cost = 1.0
    ticket: Ticket = field(default_factory=Ticket)
    budget: int | None = None
    slot: context.Prepaid | None = None
    scope: ExitStack = field(default_factory=ExitStack)
    outcome: Requeue | BaseException | str | None = None
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
            return Skip("already ended")
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
        return Skip(f"requeued ({requeue.reason}) for {requeue.countdown:.3f}s")

    def drop(self) -> SkipMessage:
        """A stale copy: acknowledged, with nothing stored or published."""
        self.outcome = _STALE
        self.message.options["store_results"] = False
        return Skip("stale copy")

    def fail(self, exc: Exception) -> SkipMessage:
        """Dead-letter the message with ``exc``; ``Retries`` never sees it."""
        if isinstance(exc, RequeueBudgetExhausted):
            log.warning("queue_ratelimit: %s: %s", self.message, exc)
        else:
            log.error("queue_ratelimit: %s failed", self.message, exc_info=exc)
        self.outcome = exc
        self.message.fail()
        self.message.stuff_exception(exc)
        return Skip(f"failed: {type(exc).__name__}: {exc}")

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
        """Publish the copy; with Redis, first mark it pending (``integrations.due``)."""
        message, ticket = self.message, replace(requeue.ticket, copy=self.ticket.copy)
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


current: ContextVar[Delivery | None] = ContextVar("queue_ratelimit_delivery", default=None)


def end(message: MessageProxy) -> Delivery | None:
    delivery = current.get()
    current.set(None)
    return delivery if delivery is not None and delivery.message is message else None

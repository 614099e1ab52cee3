"""What to do with a task, whatever runs it: run now, or requeue it for later.

The task runner (``queue_ratelimit.runner``) asks :class:`TaskGate`, for a :class:`TaskCall`:

* before the body, ``gate.before(call, ticket)`` acquires (redeeming the task's reservation when it
  carries one) and answers :class:`Run` (sleep ``decision.wait``, at most ``max_wait``, then
  run) or :class:`Requeue` (put the task back on the broker with ``countdown``);
* when the body meets a backoff (``RateLimited``), ``gate.rate_limited(call, ticket, ...)``
  answers the :class:`Requeue` carrying the upstream's ``Retry-After`` plus jitter.

A requeued task carries a :class:`Ticket` in a message header: how often it was requeued
(against its own ``requeue_budget``, never the framework's retries), its reservation, and,
for a wait longer than ``max_countdown``, the time before which it must not run: such a task
is parked in hops no longer than ``max_countdown`` (a Redis broker redelivers unacked
messages after its ``visibility_timeout``; RabbitMQ closes channels that hold a message
longer than its ``consumer_timeout``). Parking hops do not count against the budget, nor do
requeues while the shared backend is unavailable and the integration fails closed, nor a
holder of a reservation coming back early (while AIMD climbs) and going again until its slot. When
the budget is spent, ``RequeueBudgetExhausted`` is raised for the framework's failure path.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from queue_ratelimit import context, signals
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.context import Prepaid
from queue_ratelimit.errors import BACKEND_UNAVAILABLE, BackendUnavailable, RequeueBudgetExhausted
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.logs import log_requeue
from queue_ratelimit.plans import Cost
from queue_ratelimit.policy.state import Decision, Reservation

REQUEUES = "requeues"
"""The fleet-wide count of requeues (``Limiter.stats``)."""
EXHAUSTED = "exhausted"
"""A refusal's (and a requeue's) reason: held past ``max_backoff`` by a stated wait."""
YIELDED = "yielded"
"""A requeue's reason: the task gave its worker thread up while it slept for its slot."""

TICKET_HEADER = "queue_ratelimit"
"""The message header that carries a requeued task's :class:`Ticket`."""


@dataclass(frozen=True)
class Ticket:
    """What a requeued task carries from one delivery to the next."""

    requeues: int = 0
    reservation: Reservation | None = None
    not_before: float | None = None
    copy: str | None = None
    """This copy's token (``None``: the original message); a copy that is not the task's
    latest is stale and dropped (``queue_ratelimit.integrations.due``)."""

    def dumps(self) -> str:
        """The ticket as a header value (JSON)."""
        res = self.reservation
        return json.dumps(
            {
                "requeues": self.requeues,
                "reservation": [res.epoch, res.slot, list(res.due)] if res else None,
                "not_before": self.not_before,
                "copy": self.copy,
            }
        )

    @classmethod
    def loads(cls, value: object) -> Ticket:
        """Read a header value; anything unreadable is a fresh ticket, never an error."""
        try:
            data = json.loads(value) if isinstance(value, str | bytes) else value
            if not isinstance(data, dict):
                return cls()
            requeues = int(data.get("requeues") or 0)
            reservation = _reservation(data.get("reservation"))
            not_before = data.get("not_before")
            not_before = float(not_before) if not_before is not None else None
            copy = data.get("copy")
            copy = copy if isinstance(copy, str) and copy else None
        except (TypeError, ValueError, IndexError, KeyError, OverflowError, RecursionError):
            return cls()
        if requeues < 0 or (not_before is not None and not math.isfinite(not_before)):
            return cls()
        return cls(requeues, reservation, not_before, copy)


def _reservation(value: object) -> Reservation | None:
    """A ticket's reservation, ``[epoch, slot, [dues]]``; None unless every number is finite."""
    if not value or not isinstance(value, list):
        return None
    slot = float(value[1])
    if not math.isfinite(slot):
        return None
    due = tuple(float(mark) for mark in value[2]) if len(value) > 2 else ()
    due = due if all(math.isfinite(mark) for mark in due) else ()
    return Reservation(int(value[0]), slot, due)


@dataclass(frozen=True)
class Run:
    """Run the body after sleeping ``decision.wait``."""

    decision: Decision


@dataclass(frozen=True)
class Requeue:
    """Put the task back on the broker: run again in ``countdown`` seconds with ``ticket``.

    ``wait`` is the whole wait, before ``max_countdown`` capped it into ``countdown`` (a store
    that can hold the task that long, such as the Celery due set, needs no parking hops).
    """

    countdown: float
    ticket: Ticket
    reason: str
    wait: float


Verdict = Run | Requeue


@dataclass(frozen=True)
class TaskCall:
    """One task's limits for one run, resolved (``queue_ratelimit.runner.TaskLimits.call``).

    ``requeue_budget``, ``max_wait`` and ``cooldown_wait`` left None are the integration's.
    """

    integration: str
    tenant: str | None = None
    cost: Cost = 1.0
    requeue_budget: int | None = None
    max_wait: float | None = None
    cooldown_wait: float | None = None

    def within(self, seconds: float, config: IntegrationConfig) -> TaskCall:
        """This call sleeping at most ``seconds`` in the worker, a cooldown included (a
        longer wait requeues the task, its slot reserved)."""
        wait = config.max_wait if self.max_wait is None else self.max_wait
        return replace(self, max_wait=min(wait, seconds), cooldown_wait=0.0)


class TaskGate:
    """Decides, for one limiter, whether a task runs now or goes back to the broker.

    Args:
        limiter: the shared limiter.
        max_countdown: the longest single countdown given to the broker; longer waits are
            parked in hops (see the module docstring).
        jitter: the countdown of a requeue without a reserved slot (a backoff's
            ``Retry-After``, a cooldown with nothing reserved) grows by up to this fraction
            (at most 5 s), so tasks throttled together do not all return at the same
            instant. A reserved slot is already spread at the rate and gets none: jitter
            would only make its holder late (and a late holder waits for the arrival
            schedule, ``policy/pacing.py``).
        clock: wall-clock time in seconds (for parking).
        rng: the jitter's random source.
        logger: where each requeue's one INFO line goes (``queue_ratelimit``; RQ gives its
            worker's logger, which ``rq worker`` configures).
    """

    def __init__(
        self,
        limiter: Limiter,
        *,
        max_countdown: float = 600.0,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        if max_countdown <= 0:
            raise ValueError("max_countdown must be > 0")
        self.limiter = limiter
        self.max_countdown = max_countdown
        self.jitter = jitter
        self._clock = clock
        self._rng = rng
        self.log = logger or logging.getLogger("queue_ratelimit")

    def budget(self, call: TaskCall) -> int:
        """The requeue budget: the task's own, else the integration's."""
        given = call.requeue_budget
        return self.limiter.config(call.integration).requeue_budget if given is None else given

    def before(self, call: TaskCall, ticket: Ticket) -> Verdict:
        """Acquire ``call.cost`` for a task about to run (redeeming its reservation); never
        sleeps."""
        now = self._clock()
        if ticket.not_before is not None and now < ticket.not_before:
            return self._park(call, ticket, ticket.not_before - now, "parked")
        last_chance = ticket.requeues >= self.budget(call)
        config = self.limiter.config(call.integration)
        sleepers = config.max_sleepers if call.tenant is None else config.tenant_sleepers
        try:
            decision = self.limiter.acquire(  # no budget left: nothing to reserve a slot for
                call.integration,
                call.tenant,
                call.cost,
                max_wait=call.max_wait,
                cooldown_wait=call.cooldown_wait,
                reservation=ticket.reservation,
                reserve=not last_chance,
                max_sleepers=sleepers,  # one backlog must not hold every worker asleep
                # with budget left every refusal is requeued: counted in the same round trip
                refusal_event=None if last_chance else REQUEUES,
            )
        except BackendUnavailable as exc:  # fails closed: come back once it may answer
            return self.outage(call, ticket, exc.retry_after)
        if decision.granted:
            return Run(decision)
        held, kept = ticket.reservation, decision.reservation
        early = (  # a paid-for slot, only not yet due at the rate reached so far
            decision.reason == "rate"
            and held is not None
            and kept is not None
            and kept.epoch == held.epoch
        )
        reason = "recheck" if early else decision.reason
        # come back at the slot, or sooner while the rate climbs; a slot paid for is not
        # spent again, only not yet due; a task held by a spent quota is parked until its
        # reset, spending nothing (its slot after the reset reserved, spread at the rate)
        spend = not early and reason != EXHAUSTED
        return self._requeue(
            call, ticket, decision.come_back, reason, kept, spend=spend, counted=not last_chance
        )

    def rate_limited(
        self, call: TaskCall, ticket: Ticket, retry_after: float, reason: str = "backoff"
    ) -> Requeue:
        """The body met a backoff: requeue after ``retry_after`` (plus jitter). With
        ``reason="backend_unavailable"`` (the limiter's Redis did not answer) no budget is
        spent, as when the outage is met before the body."""
        if reason == BACKEND_UNAVAILABLE:  # its slot is used: nothing left to redeem
            return self.outage(call, replace(ticket, reservation=None), retry_after)
        if retry_after > self.limiter.config(call.integration).max_backoff:  # a spent quota
            return self._requeue(call, ticket, retry_after, EXHAUSTED, None, spend=False)
        return self._requeue(call, ticket, retry_after, reason, None)

    def yielded(self, call: TaskCall, ticket: Ticket, left: float) -> Requeue:
        """A task gave its worker thread up while it slept for a granted slot (Dramatiq's
        ``crowded_wait``): back in ``left`` seconds, when the slot would have come, to ask
        afresh (the slot is spent, any reservation redeemed). It spends one requeue of the
        budget, so a task gives way a bounded number of times."""
        return self._requeue(call, replace(ticket, reservation=None), left, YIELDED, None)

    def outage(self, call: TaskCall, ticket: Ticket, retry_after: float) -> Requeue:
        """The limiter's Redis did not answer: come back once it may (spread over up to twice
        ``retry_after``, so a fleet does not probe it at once), spending no budget."""
        wait = retry_after * (1.0 + self._rng())
        return self._park(call, ticket, wait, BACKEND_UNAVAILABLE)

    def release_unused(self, slot: Prepaid) -> None:
        """The task ended: give back the concurrency lease of a slot no call used."""
        if not slot.used and slot.decision.lease:
            slot.used = True
            self.limiter.release(slot.integration, slot.tenant, slot.decision.lease)

    def report_backoff(self, slot: Prepaid, retry_after: float) -> None:
        """The running task met a backoff it reports itself: one report, in the congestion
        event of the task's own slot, giving its unused lease back in the same round trip."""
        lease = None if slot.used else slot.decision.lease
        slot.used = True  # its lease is given back here, not again when the task ends
        self.limiter.on_backoff(
            slot.integration,
            slot.tenant,
            retry_after=retry_after,
            epoch=slot.decision.epoch,
            lease=lease,
        )

    def _requeue(
        self,
        call: TaskCall,
        ticket: Ticket,
        wait: float,
        reason: str,
        reservation: Reservation | None,
        *,
        spend: bool = True,
        counted: bool = False,
    ) -> Requeue:
        """``counted``: the acquire that refused the task counted the requeue already."""
        allowed = self.budget(call)
        if spend and ticket.requeues >= allowed:
            self._exhausted(call, ticket, allowed, reason)
        countdown = max(0.0, wait)
        if reservation is None:  # see ``jitter``
            countdown += self._rng() * min(self.jitter * countdown, 5.0)
        not_before = self._clock() + countdown if countdown > self.max_countdown else None
        next_ticket = Ticket(ticket.requeues + int(spend), reservation, not_before)
        requeue = Requeue(min(countdown, self.max_countdown), next_ticket, reason, countdown)
        self._announce(call, requeue, counted)
        return requeue

    def _exhausted(self, call: TaskCall, ticket: Ticket, allowed: int, reason: str) -> NoReturn:
        integration, tenant = call.integration, call.tenant
        self.limiter.count(integration, "budget_exhausted", tenant)
        signals.emit(
            signals.budget_exhausted,
            self,
            integration=integration,
            tenant=tenant,
            requeues=ticket.requeues,
        )
        target = f"{integration}:{tenant}" if tenant else integration
        raise RequeueBudgetExhausted(
            f"{target}: requeued {ticket.requeues} times (requeue_budget {allowed}) "
            f"without a slot; last reason: {reason}"
        )

    def _park(self, call: TaskCall, ticket: Ticket, left: float, reason: str) -> Requeue:
        """Requeue without counting against the budget (the ticket is unchanged)."""
        requeue = Requeue(min(left, self.max_countdown), ticket, reason, left)
        self._announce(call, requeue)
        return requeue

    def _announce(self, call: TaskCall, requeue: Requeue, counted: bool = False) -> None:
        if not counted:
            self.limiter.count(call.integration, REQUEUES, call.tenant)
        fields = {
            "integration": call.integration,
            "tenant": call.tenant,
            "reason": requeue.reason,
            "countdown": requeue.countdown,
            "requeues": requeue.ticket.requeues,
        }
        signals.emit(signals.task_requeued, self, **fields)
        task = context.task.get()
        if task is not None:
            fields.update(task_name=task.name, task_id=task.id)
        log_requeue(self.log, **fields)

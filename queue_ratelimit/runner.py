"""One task runner for every framework: a task's limits, resolved once, and its run.

A framework adapter does three things only: it reads its message into a :class:`TaskLimits`
and a :class:`~queue_ratelimit.tasks.Ticket`, calls :meth:`TaskRun.run` with the body, and
republishes the :class:`~queue_ratelimit.tasks.Requeue` it may get back (Celery: a copy in the
due set or on the broker; Dramatiq: ``SkipMessage`` and a copy; RQ: a scheduled job).

What the runner promises, whatever runs it:

* before the body it acquires (redeeming the ticket's reservation); a wait up to ``max_wait``
  is slept, a longer one answers ``Requeue`` without running the body;
* while the body runs, the slot is prepaid (the first HTTP call of the same key uses it) and a
  ``RateLimited`` met by the project's HTTP clients, by :func:`requeue_after`, or raised
  past them ends the body as one control-flow exception, :class:`~queue_ratelimit.context.Backoff`
  (a ``BaseException``: ``except Exception`` and ``autoretry_for`` never swallow it), which the
  runner answers with a ``Requeue`` carrying the upstream's ``Retry-After``;
* a lease no call used is given back when the body ends, however it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from queue_ratelimit import context
from queue_ratelimit.context import Backoff
from queue_ratelimit.errors import ConfigError, InvalidRequest, RateLimited
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import Cost
from queue_ratelimit.policy.state import Decision
from queue_ratelimit.tasks import Requeue, TaskCall, TaskGate, Ticket

__all__ = ["TaskLimits", "TaskRun", "current_run", "requeue_after"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Tenant = str | Callable[..., str | None] | None
Costs = Cost | Callable[..., Cost]

OPTIONS = frozenset({"integration", "tenant", "cost", "requeue_budget", "max_wait"})
"""The per-task options every framework accepts, under the same names."""


@dataclass(frozen=True)
class TaskLimits:
    """What a task declares about its limits, in the same words for every framework.

    Attributes:
        integration: the integration whose limits apply.
        tenant: a tenant name, or a function of the task's arguments giving one (None: one
            limit for every task of the integration; an int, such as an account id, is its
            decimal string).
        cost: what a run spends: a number of requests, ``{limit: units}``, or a function of
            the task's arguments giving one.
        requeue_budget: requeues allowed before ``RequeueBudgetExhausted`` (None: the
            integration's ``requeue_budget``).
        max_wait: the longest wait slept in the worker (None: the integration's).

    Raises:
        ConfigError: a field is invalid (named in the error), when the task is declared.
    """

    integration: str
    tenant: Tenant = None
    cost: Costs = 1.0
    requeue_budget: int | None = None
    max_wait: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.integration, str) or not self.integration:
            raise ConfigError(None, "integration", self.integration, "must be a non-empty string")
        tenant = self.tenant
        if tenant is not None and not callable(tenant) and not (isinstance(tenant, str) and tenant):
            raise ConfigError(self.integration, "tenant", tenant, "a string or a function")
        _check_options(self.integration, self.requeue_budget, self.max_wait)

    def check(self, limiter: Limiter, where: str) -> None:
        """Check the integration is known and a fixed ``cost`` is possible.

        Raises:
            ConfigError: naming ``where`` (the task) and the field.
        """
        try:
            limiter.config(self.integration)
        except ConfigError as exc:
            reason = f"{where}: {exc.reason}"
            raise ConfigError(self.integration, "integration", self.integration, reason) from exc
        if not callable(self.cost):
            try:
                limiter.costs(self.integration, self.cost)
            except (InvalidRequest, TypeError) as exc:
                raise ConfigError(self.integration, "cost", self.cost, f"{where}: {exc}") from exc

    def call(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        message: Mapping[str, Any] | None = None,
    ) -> TaskCall:
        """This task's call with these arguments: the message's own options over the task's
        (the integration's config fills in what neither sets, in the gate)."""
        given = message or {}
        tenant = self.tenant(*args, **kwargs) if callable(self.tenant) else self.tenant
        if isinstance(tenant, int) and not isinstance(tenant, bool):
            tenant = format(tenant, "d")  # (an id: 123 is "123", an IntEnum's value too)
        cost = self.cost(*args, **kwargs) if callable(self.cost) else self.cost
        budget = given.get("requeue_budget", self.requeue_budget)
        max_wait = given.get("max_wait", self.max_wait)
        _check_options(self.integration, budget, max_wait)
        return TaskCall(self.integration, tenant, cost, budget, max_wait)


def _check_options(integration: str, requeue_budget: Any, max_wait: Any) -> None:
    for name, value, kinds, what in (
        ("requeue_budget", requeue_budget, int, "an int"),
        ("max_wait", max_wait, int | float, "seconds"),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kinds) or not value >= 0:
            raise ConfigError(integration, name, value, f"must be {what} >= 0")


CONFIRM_AFTER = 0.05
"""Seconds: a task that slept at least this long for its slot checks it still holds
(``Limiter.holds``: one small read) before its body runs."""


class TaskRun:
    """One delivery of a gated task: acquire, run the body with its slot, or requeue.

    Args:
        gate: the worker's gate (the limiter, ``max_countdown``, jitter).
        call: the task's resolved limits (``TaskLimits.call``).
        ticket: what the delivery carries from its earlier copies.
        info: the task's name and id (for signals and logs).
    """

    def __init__(
        self, gate: TaskGate, call: TaskCall, ticket: Ticket, info: context.TaskInfo
    ) -> None:
        self.gate = gate
        self.call = call
        self.ticket = ticket
        self.info = info
        self.slot: context.Prepaid | None = None
        self.pause: Callable[[float], bool] = _sleep
        """Sleeps a granted wait; False when it stopped early because the worker's thread is
        wanted by other work (Dramatiq's ``crowded_wait``): the task is then requeued."""

    def admit(self, granted: Callable[[], None] | None = None) -> Requeue | None:
        """Acquire for the body: None when it may run (its short wait slept), else the
        ``Requeue`` to publish (``RequeueBudgetExhausted`` when the budget is spent).

        ``granted`` runs as soon as the slot is granted, before the wait is slept (RQ forgets
        the redeemed reservation there, so a job killed while it sleeps cannot redeem it
        again). A wait of ``CONFIRM_AFTER`` or more is confirmed after it is slept
        (``Limiter.holds``); a slot a backoff voided meanwhile is asked for once more."""
        call = self.call
        for again in (False, True):
            with context.running(self.info):
                verdict = self.gate.before(call, self.ticket)
            if isinstance(verdict, Requeue):
                return verdict
            if granted is not None:
                granted()
            decision = verdict.decision
            started = time.monotonic()
            pause = _sleep if decision.reason == "probe" else self.pause  # the one probe goes
            if decision.wait > 0 and not pause(decision.wait):
                return self._yield(decision, decision.wait - (time.monotonic() - started))
            if again or decision.wait < CONFIRM_AFTER:
                break
            if self.gate.limiter.holds(call.integration, call.tenant, decision):
                break
            # a backoff met by another worker while this one slept voided the slot: the
            # call would meet it again; ask afresh (a refusal requeues the task)
            if decision.lease:
                self.gate.limiter.release(call.integration, call.tenant, decision.lease)
            self.ticket = replace(self.ticket, reservation=None)
        self.slot = context.Prepaid(call.integration, call.tenant, decision, call.cost)
        return None

    def _yield(self, decision: Decision, left: float) -> Requeue:
        """The sleep for a granted slot stopped early: give the thread up, the slot unused
        (its lease back), the task back when the slot would have come (one requeue of its
        budget)."""
        call = self.call
        if decision.lease:
            self.gate.limiter.release(call.integration, call.tenant, decision.lease)
        with context.running(self.info):
            return self.gate.yielded(call, self.ticket, max(0.0, left))

    def backoff(self, exc: RateLimited) -> Requeue:
        """The ``Requeue`` for a backoff met by the body (``RequeueBudgetExhausted`` when
        the budget is spent)."""
        with context.running(self.info):
            return self.gate.rate_limited(self.call, self.ticket, exc.retry_after, exc.reason)

    def outage(self, retry_after: float) -> Requeue:
        """Come back once the shared store may answer again, spending no budget (and
        redeeming nothing: a copy that could not be checked may be a stale duplicate)."""
        ticket = replace(self.ticket, reservation=None)
        with context.running(self.info):
            return self.gate.outage(self.call, ticket, retry_after)

    @contextmanager
    def body(self) -> Iterator[None]:
        """The body's context: its prepaid slot, the backoff hook, this run as current; the
        unused lease is given back when it ends."""
        token = _current.set(self)
        try:
            with context.running(self.info, self.slot, context.hand_over):
                yield
        finally:
            _current.reset(token)
            self.end()

    def end(self) -> None:
        """Give back the lease of a slot no call used (idempotent; a failure is logged, never
        raised over the body's own outcome)."""
        if self.slot is None:
            return
        try:
            self.gate.release_unused(self.slot)
        except Exception:
            log.exception("queue_ratelimit: releasing the lease of task %s failed", self.info.id)

    def run(self, body: Callable[[], T]) -> T | Requeue:
        """Admit, then run ``body``: its result, or the ``Requeue`` to publish."""
        requeue = self.admit()
        if requeue is not None:
            return requeue
        return self.run_admitted(body)

    def run_admitted(self, body: Callable[[], T]) -> T | Requeue:
        """Run ``body`` of an admitted task: its result, or the ``Requeue`` a backoff met in
        it asks for."""
        try:
            with self.body():
                return body()
        except Backoff as caught:
            return self.backoff(caught.exc)
        except RateLimited as exc:  # raised past the clients' hook, by the body itself
            return self.backoff(exc)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True


_current: ContextVar[TaskRun | None] = ContextVar("queue_ratelimit_run", default=None)


def current_run() -> TaskRun | None:
    """The run whose body is executing in this context, if any."""
    return _current.get()


def requeue_after(retry_after: float, *, report: bool = True) -> BaseException:
    """``raise`` what this returns to requeue the running task after ``retry_after`` seconds.

    The same in a Celery task, a Dramatiq actor and an RQ job. With ``report`` the limiter
    also learns of the backoff (slowing every worker), in the congestion event of the task's
    own slot. Inside a gated task it is the control-flow ``Backoff`` (a ``BaseException``,
    so ``except Exception`` and ``autoretry_for`` cannot swallow the requeue); outside one a
    plain ``RateLimited``.
    """
    run = _current.get()
    slot = None if run is None else run.slot
    if run is None or slot is None:
        return RateLimited(retry_after)
    if report:
        run.gate.report_backoff(slot, retry_after)
    return Backoff(RateLimited(retry_after, slot.integration, slot.tenant))

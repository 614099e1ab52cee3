"""Per-task context shared between an integration and the code its task runs.

A framework integration sets these around a task's body; the HTTP clients and the signal
emitter read them. Context variables, so threads and asyncio tasks each see their own.

* ``task`` (name and id): added to every signal emitted while the task runs.
* ``prepaid``: the slot the task acquired before its body ran, and the cost it paid. The
  first HTTP call for the same integration and tenant uses it instead of acquiring a second
  time (the cost is that call's estimate); a client built without a tenant takes the task's.
* ``on_rate_limited``: how the task turns a ``RateLimited`` into a requeue. The HTTP clients
  call it instead of raising, so a task's own ``autoretry_for`` never sees the exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import NoReturn

from queue_ratelimit.errors import RateLimited
from queue_ratelimit.plans import Cost
from queue_ratelimit.policy.state import Decision


@dataclass(frozen=True)
class TaskInfo:
    """The task a decision is made for."""

    name: str
    id: str | None


@dataclass
class Prepaid:
    """A slot acquired before the body ran, not yet used by a call."""

    integration: str
    tenant: str | None
    decision: Decision
    cost: Cost = 1.0
    used: bool = field(default=False)


task: ContextVar[TaskInfo | None] = ContextVar("queue_ratelimit_task", default=None)
prepaid: ContextVar[Prepaid | None] = ContextVar("queue_ratelimit_prepaid", default=None)
on_rate_limited: ContextVar[Callable[[RateLimited], NoReturn] | None] = ContextVar(
    "queue_ratelimit_on_rate_limited", default=None
)


def task_tenant(integration: str) -> str | None:
    """The running task's tenant for ``integration`` (clients built with no tenant use it)."""
    slot = prepaid.get()
    return slot.tenant if slot is not None and slot.integration == integration else None


def take_prepaid(integration: str, tenant: str | None) -> Prepaid | None:
    """The task's prepaid slot for this key, once (its wait already slept by the task, so
    the decision's ``wait`` is 0); None when there is none (left)."""
    slot = prepaid.get()
    if slot is None or slot.used or slot.integration != integration or slot.tenant != tenant:
        return None
    slot.used = True
    decision = dataclasses.replace(slot.decision, wait=0.0)  # the task has waited already
    return dataclasses.replace(slot, decision=decision)


class Backoff(BaseException):
    """Carries a ``RateLimited`` out of a task's body to the requeue.

    Control flow, a ``BaseException`` like ``KeyboardInterrupt``: a body's own
    ``except Exception`` cannot swallow the requeue (which would run the task twice: once
    finishing, once requeued), and ``autoretry_for`` never sees it.
    """

    def __init__(self, exc: RateLimited) -> None:
        super().__init__(exc)
        self.exc = exc


def hand_over(exc: RateLimited) -> NoReturn:
    """A task's ``on_rate_limited`` hook for frameworks that requeue from outside the body:
    carry ``exc`` out of the body as a :class:`Backoff`."""
    raise Backoff(exc)


def raise_rate_limited(exc: RateLimited) -> NoReturn:
    """Hand ``exc`` to the running task's requeue hook, or raise it when there is none."""
    hook = on_rate_limited.get()
    if hook is not None:
        hook(exc)
    raise exc


@contextmanager
def running(
    info: TaskInfo,
    slot: Prepaid | None = None,
    hook: Callable[[RateLimited], NoReturn] | None = None,
) -> Iterator[None]:
    """Set the task context for the duration of a task's body."""
    tokens = (task.set(info), prepaid.set(slot), on_rate_limited.set(hook))
    try:
        yield
    finally:
        on_rate_limited.reset(tokens[2])
        prepaid.reset(tokens[1])
        task.reset(tokens[0])

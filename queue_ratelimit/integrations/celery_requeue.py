"""Celery: publish a task's requeue: the same task (same id, same ``request.retries``) again
later, parked in the due set when the app has one (``celery_due``), else sent to the broker
with a countdown the way ``Task.retry`` sends it, before the current message is
acknowledged."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Retry

from queue_ratelimit.errors import BackendError, RateLimited
from queue_ratelimit.integrations.celery_due import due_for, encode, first_delivery
from queue_ratelimit.integrations.due import DueTasks
from queue_ratelimit.tasks import TICKET_HEADER, Requeue, Ticket

__all__ = ["quiet_retry_lines", "republish"]

log = logging.getLogger("queue_ratelimit.integrations.celery")


def republish(task: Task, requeue: Requeue, delivered: Ticket) -> Retry:
    """Send ``task``'s next copy for later; the ``Retry`` to raise (``Ignore`` is raised when
    this delivery turns out to be a stale copy)."""
    due = due_for(task.app)
    if due is not None:
        parked = _park(task, due, requeue, delivered)
        if parked is not None:
            return parked
    ticket = replace(requeue.ticket, copy=delivered.copy)  # no new copy: same token
    signature = _again(task, ticket, requeue.countdown)
    signature.apply_async()
    return _retry(task, requeue, requeue.countdown, signature)


def _park(task: Task, due: DueTasks, requeue: Requeue, delivered: Ticket) -> Retry | None:
    """Park the task's next copy in the due set for all of its wait; ``None`` when Redis does
    not answer (the broker takes it then)."""
    request, new = task.request, uuid.uuid4().hex
    signature = _again(task, replace(requeue.ticket, not_before=None, copy=new), None)
    try:
        message = encode(task.app, signature, task.serializer)
    except Exception:  # the broker's serializer may still manage: it takes the task
        log.warning("queue_ratelimit: task %s: not parked", request.id, exc_info=True)
        return None
    fresh = first_delivery(request)
    try:  # no parking hops: Redis holds it as long as it must wait
        parked = due.park(request.id, delivered.copy, new, requeue.wait, message, fresh=fresh)
    except BackendError:
        return None
    if not parked:  # this delivery is itself a stale copy
        raise Ignore()
    return _retry(task, requeue, requeue.wait, signature)


def _again(task: Task, ticket: Ticket, countdown: float | None) -> Any:
    """The signature of the task's next copy, carrying ``ticket``."""
    request = task.request
    headers = {**(request.headers or {}), TICKET_HEADER: ticket.dumps()}
    return task.signature_from_request(
        request, countdown=countdown, retries=request.retries, headers=headers
    )


def _retry(task: Task, requeue: Requeue, countdown: float, signature: Any) -> Retry:
    exc = RateLimited(countdown, task.integration)
    return Retry(f"requeued ({requeue.reason})", exc=exc, when=countdown, sig=signature)


def quiet_retry_lines() -> None:
    """Leave out Celery's "Task ...[id] retry: requeued (...)" line: the gate logged the
    requeue once already (idempotent)."""
    trace = logging.getLogger("celery.app.trace")
    if not any(isinstance(f, _RequeueLoggedOnce) for f in trace.filters):
        trace.addFilter(_RequeueLoggedOnce())


class _RequeueLoggedOnce(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping) and "retry:" in str(record.msg):
            return not str(args.get("exc", "")).startswith("requeued (")
        return True

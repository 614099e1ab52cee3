"""Celery: requeued tasks wait in the limiter's Redis until due (``integrations.due``).

``install(app)`` turns it on for an app whose limiter is on Redis: a requeue parks the task's
next message (serialized with the task's ``serializer``) in the due set of the app's
broker and the delivery is acknowledged; ``PromoteStep``, a consumer bootstep of every
worker, publishes the due tasks to the queues they came from, each within about
``queue_ratelimit_promote_interval`` (default 0.05 s) of its slot. Without ``install`` or
with a memory limiter, a requeue is published to the broker with a countdown, as
``Task.retry`` does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, ClassVar

from celery import Celery, bootsteps, signals
from celery.utils.time import maybe_iso8601
from kombu.serialization import dumps, loads, prepare_accept_content
from kombu.utils.url import maybe_sanitize_url

from queue_ratelimit.errors import BackendError, ConfigError
from queue_ratelimit.integrations.celery_published import (
    SENT_HEADER,
    Recovery,
    enable_tracking,
    tracked,
)
from queue_ratelimit.integrations.due import Claimed, DueTasks, due_tasks
from queue_ratelimit.integrations.polling import PollLog
from queue_ratelimit.tasks import TICKET_HEADER, Ticket

__all__ = ["LATEST", "STALE", "UNCHECKED", "PromoteStep", "arrival", "due_for", "enable"]

log = logging.getLogger(__name__)
_DUE_ATTR = "_queue_ratelimit_due"


def enable(app: Celery) -> None:
    """Park the app's requeues in Redis from now on (``install`` calls it)."""
    setattr(app, _DUE_ATTR, True)
    enable_tracking(app)  # originals on a Redis broker, from publish to receipt
    # a parked task that is revoked, or unknown to the workers, must not come back
    signals.task_revoked.connect(_revoked, weak=False, dispatch_uid=_REVOKED)
    signals.task_unknown.connect(_unknown, weak=False, dispatch_uid=_UNKNOWN)


_REVOKED, _UNKNOWN = "queue_ratelimit.due.revoked", "queue_ratelimit.due.unknown"


def _revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    _drop(getattr(sender, "app", None), getattr(request, "id", None))


def _unknown(sender: Any = None, id: Any = None, **_: Any) -> None:
    _drop(getattr(sender, "app", None), id)


def _drop(app: Celery | None, task_id: Any) -> None:
    due = due_for(app) if app is not None else None
    if due is None or not isinstance(task_id, str):
        return
    try:
        due.drop(task_id)
    except BackendError as exc:
        log.warning("queue_ratelimit: task %s: not taken out of the due set: %s", task_id, exc)


def due_for(app: Celery) -> DueTasks | None:
    """The app's due set, or ``None`` when requeues go to the broker (see the module)."""
    due = getattr(app, _DUE_ATTR, None)
    if due is True:
        due = _build(app)
        setattr(app, _DUE_ATTR, due)
    return due if isinstance(due, DueTasks) else None


LATEST, STALE, UNCHECKED = "latest", "stale", "unchecked"


def arrival(app: Celery, request: Any, ticket: Ticket) -> str:
    """Whether this delivery is its task's ``LATEST`` copy, a ``STALE`` one (to drop), or a
    copy Redis could not check (``UNCHECKED``: send it round again through the broker, or it
    would run once now and once more when its claim lapses).

    An original's first delivery is not checked (no second round trip). A delivery with no
    copy token that Redis cannot check runs: at least once.
    """
    due = due_for(app)
    if due is None or first_delivery(request):
        return LATEST
    try:
        return LATEST if due.check(request.id, ticket.copy) else STALE
    except BackendError:
        return UNCHECKED if ticket.copy else LATEST


def first_delivery(request: Any) -> bool:
    """An original's first delivery: no ticket yet, and the broker delivers it the first time."""
    redelivered = bool((request.delivery_info or {}).get("redelivered"))
    return not redelivered and ticket_header(request) is None


def ticket_header(request: Any) -> object:
    """The ``queue_ratelimit`` header of a task's message (``None``: an original)."""
    value = getattr(request, TICKET_HEADER, None)
    if value is None and isinstance(request.headers, dict):
        value = request.headers.get(TICKET_HEADER)
    return value


def _build(app: Celery) -> DueTasks | None:
    from queue_ratelimit.integrations.celery_settings import limiter_for

    conf = app.conf
    keep = conf.get("queue_ratelimit_ticket_keep")
    if keep is None:
        visibility = (conf.get("broker_transport_options") or {}).get("visibility_timeout", 3600)
        keep = max(7200.0, 2.0 * float(visibility))
    if not isinstance(keep, int | float) or keep <= 0:
        raise ConfigError(None, "queue_ratelimit_ticket_keep", keep, "must be > 0 seconds")
    return due_tasks(limiter_for(app), scope(app), keep=float(keep))


def scope(app: Celery) -> str:
    """The due set's scope: the app's broker (its URL without the password, digested)."""
    url = maybe_sanitize_url(str(app.conf.broker_url or app.connection_for_write().as_uri()))
    return "celery-" + hashlib.sha256(str(url).encode()).hexdigest()[:16]


def encode(app: Celery, signature: dict[str, Any], serializer: str | None = None) -> str:
    """``signature`` (task, args, kwargs, options) as ``serializer`` (default: the app's
    ``task_serializer``) writes it."""
    serializer = serializer or app.conf.task_serializer
    content_type, encoding, body = dumps(dict(signature), serializer=serializer)  # type: ignore[no-untyped-call]
    raw = body if isinstance(body, bytes) else body.encode(encoding or "utf-8")
    envelope = [content_type, encoding, base64.b64encode(raw).decode("ascii")]
    return json.dumps(envelope)


def decode(app: Celery, message: str) -> dict[str, Any]:
    """The signature ``encode`` wrote; the app's ``accept_content`` applies."""
    content_type, encoding, raw = json.loads(message)
    accept = prepare_accept_content(app.conf.accept_content)  # type: ignore[no-untyped-call]
    signature: dict[str, Any] = loads(  # type: ignore[no-untyped-call]
        base64.b64decode(raw), content_type, encoding, accept
    )
    return signature


def _expired(expires: Any) -> bool:
    if isinstance(expires, str):
        expires = maybe_iso8601(expires)
    if not isinstance(expires, datetime):
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=timezone.utc)
    return bool(expires <= datetime.now(timezone.utc))


class PromoteStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Publishes the app's due requeued tasks to their queues, from every worker.

    Each call claims the due tasks (one script call) and publishes each with
    ``app.send_task``. It runs again when the next task is due, and at least every
    ``queue_ratelimit_promote_interval`` seconds. A task whose copy does not reach a worker
    (not published, or lost on the way) is published again once its claim lapses.
    """

    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref: Any = None
        self.trouble = PollLog(log, "promotion of due tasks", "they wait in Redis")
        self.stopped = False
        self.recovery: Recovery | None = None
        self.searched = 0.0

    def start(self, consumer: Any) -> None:
        self.stopped = False
        due = due_for(consumer.app)
        if due is not None:
            for problem in due.durability():
                log.warning(
                    "queue_ratelimit: requeued tasks wait in the limiter's Redis: %s", problem
                )
            self._schedule(consumer, 0.0)
        tracking = tracked(consumer.app)
        if tracking is not None:
            self.recovery = Recovery(consumer.app, tracking)
            if getattr(consumer, "restart_count", 0) > 0:  # after a broken connection
                self.recovery.reconnected()

    def stop(self, consumer: Any) -> None:
        self.stopped = True
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None
        if self.recovery is not None:
            self.recovery.stop()
            self.recovery = None

    def _schedule(self, consumer: Any, delay: float) -> None:
        if not self.stopped:
            self.timer_ref = consumer.timer.call_after(delay, self.promote, (consumer,))

    def promote(self, consumer: Any) -> None:
        """Publish what is due; never raises (runs on the consumer's timer)."""
        app = consumer.app
        interval = float(app.conf.get("queue_ratelimit_promote_interval") or 0.05)
        try:
            soonest = promote(app)
            if self.recovery is not None and time.monotonic() - self.searched >= 1.0:
                self.searched = time.monotonic()  # a beat, and lost originals, each second
                due = self.recovery.due
                self.recovery.run(consumer, lambda item: _publish(app, due, item))
        except Exception as exc:
            self.trouble.failed(exc)
            self._schedule(consumer, max(interval, 1.0))  # Redis or the broker is down
        else:
            self.trouble.succeeded()
            self._schedule(consumer, interval if soonest is None else min(interval, soonest))


def promote(app: Celery) -> float | None:
    """Publish the app's due tasks once; seconds until the next one is due (``None``: none).

    Raises:
        BackendError: Redis or the broker failed (what was claimed is published again once
            its claim lapses).
    """
    due = due_for(app)
    if due is None:
        return None
    claimed, soonest = due.claim()
    for item in claimed:
        _publish(app, due, item)
    return 0.0 if len(claimed) >= due.most else soonest


def _publish(app: Celery, due: DueTasks, item: Claimed) -> None:
    """Publish one claimed task as its latest copy; an unreadable one is logged (every time
    its claim lapses: it stays in Redis for an operator to see).

    Raises:
        BackendError: the broker refused the message (it is published again later).
    """
    try:
        signature = decode(app, item.message)
    except Exception:  # written by another version, or the serializer is no longer accepted
        log.error(
            "queue_ratelimit: due task %s is unreadable; it stays in Redis",
            item.task_id,
            exc_info=True,
        )
        return
    if "published" in signature:  # an original that was lost on its way to a worker
        _republish(app, signature["published"], item)
        return
    options = dict(signature.get("options") or {})
    if _expired(options.get("expires")):  # as Celery would: never run after it expires
        log.info("queue_ratelimit: due task %s expired: dropped", item.task_id)
        due.drop(item.task_id)
        return
    headers = dict(options.pop("headers", None) or {})
    ticket = Ticket.loads(headers.get(TICKET_HEADER))
    headers[TICKET_HEADER] = replace(ticket, copy=item.token).dumps()
    try:
        app.send_task(
            signature["task"],
            signature.get("args"),
            signature.get("kwargs"),
            headers=headers,
            **options,
        )
    except Exception as exc:
        raise BackendError(
            f"publishing due task {item.task_id} to the broker failed: {exc!r}"
        ) from exc


def _republish(app: Celery, message: dict[str, Any], item: Claimed) -> None:
    """Publish a lost original's message again, as copy ``item.token``.

    Raises:
        BackendError: the broker refused the message (it is published again later).
    """
    headers = dict(message.get("headers") or {})
    headers.pop(SENT_HEADER, None)
    headers[TICKET_HEADER] = Ticket(copy=item.token).dumps()
    properties = dict(message.get("properties") or {})
    task = app.tasks.get(headers.get("task"))
    serializer = getattr(task, "serializer", None) or app.conf.task_serializer
    try:
        with app.producer_or_acquire() as producer:
            producer.publish(
                message.get("body"),
                exchange=message.get("exchange") or "",
                routing_key=message.get("routing_key"),
                serializer=serializer,
                headers=headers,
                retry=True,
                **properties,
            )
    except Exception as exc:
        raise BackendError(
            f"publishing lost task {item.task_id} to the broker failed: {exc!r}"
        ) from exc

"""Celery on a Redis broker: originals tracked from publish to receipt, published again if lost.

kombu's Redis transport takes a message off its list (``BRPOP``) and records it as
unacknowledged in a second command: a worker killed between the two loses the message, and
no visibility timeout brings it back (celery/celery#7950). With ``install(app)``, a limiter
on Redis and a Redis broker, every ``RateLimitedTask`` original is tracked (``due.DueTasks``):

* **published** (by an app with ``install``, as a task it knows or by name to an
  integration's queue): its message gets the header ``queue_ratelimit_sent`` (the publish time)
  and, once the broker has it, a copy goes to the sent set of its queue (one script call by
  the publisher; a failure is logged and the task is simply not tracked);
* **received**: the worker that takes it off the queue takes it out of the sent set
  (``task_received``, in the worker's main process: from then on the broker's unacked record
  and visibility timeout keep it);
* **lost**: every worker beats in Redis each second. Once one is found dead (silent for
  ``queue_ratelimit_lost_after`` s, default 10), or a worker's broker connection broke (its
  consumer starts again), the workers claim the originals published
  before then and longer ago than that, that no worker received and that are older than the
  oldest message still in their queue (a list is first in, first out), and publish each as
  a copy (``celery_due``): the original, should it still arrive, is stale and dropped
  (``Request``). A queue whose oldest message is not tracked is left alone that round.

Costs: one script call per publish and one per receipt, and each queued original's message
also kept in the limiter's Redis until it is received. A queue purged by hand keeps its
originals tracked: they are published again once a worker is found dead afterwards, unless
``DueTasks.purge(queue)`` clears them too. ``queue_ratelimit_track_published = False`` turns
it off (the default is on for a Redis broker, off for any other).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import celery
from celery import Celery, signals
from celery.worker.request import Request as CeleryRequest
from celery.worker.state import task_ready

from queue_ratelimit.errors import BackendError, ConfigError
from queue_ratelimit.integrations.due import Claimed, DueTasks
from queue_ratelimit.integrations.polling import PollLog
from queue_ratelimit.tasks import TICKET_HEADER, Ticket

__all__ = ["SENT_HEADER", "Recovery", "Request", "enable_tracking", "tracked"]

log = logging.getLogger(__name__)

SENT_HEADER = "queue_ratelimit_sent"
"""The header of a tracked original: when it was published (seconds since the epoch)."""

LOST_AFTER = 10.0
"""Default ``queue_ratelimit_lost_after``: seconds of silence after which a worker is dead,
and the least age of an original published again."""

_APPS: weakref.WeakSet[Celery] = weakref.WeakSet()
_TRACKS = "_queue_ratelimit_tracks"
_pending = threading.local()  # per thread: the originals between before and after publish
_PENDING_MAX = 1000
_trouble = PollLog(log, "tracking of published tasks", "they are published untracked")


def enable_tracking(app: Celery) -> None:
    """Track ``app``'s originals from now on, when its broker is Redis (see the module)."""
    _APPS.add(app)
    signals.before_task_publish.connect(_before, weak=False, dispatch_uid=_BEFORE)
    signals.after_task_publish.connect(_after, weak=False, dispatch_uid=_AFTER)
    signals.task_received.connect(_received, weak=False, dispatch_uid=_RECEIVED)


_BEFORE, _AFTER = "queue_ratelimit.published.before", "queue_ratelimit.published.after"
_RECEIVED = "queue_ratelimit.published.received"


def tracked(app: Celery) -> DueTasks | None:
    """The due set tracking ``app``'s originals, or ``None`` when they are not tracked."""
    from queue_ratelimit.integrations.celery_due import due_for

    tracks = getattr(app, _TRACKS, None)
    if tracks is None:
        tracks = app.conf.get("queue_ratelimit_track_published")
        if tracks is None:
            tracks = app.connection_for_write().transport.driver_type == "redis"
        elif not isinstance(tracks, bool):
            raise ConfigError(None, "queue_ratelimit_track_published", tracks, "must be a bool")
        setattr(app, _TRACKS, tracks)
    return due_for(app) if tracks else None


def lost_after(app: Celery) -> float:
    """``queue_ratelimit_lost_after`` (``ConfigError`` when it is not a positive number)."""
    value = app.conf.get("queue_ratelimit_lost_after", LOST_AFTER)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(None, "queue_ratelimit_lost_after", value, "must be > 0 seconds")
    return float(value)


def _rate_limited(app: Celery, name: object, queue: object) -> bool:
    """A ``RateLimitedTask`` of ``app``'s, or a task ``app`` does not know (``send_task`` by
    name) sent to an integration's queue (``integration_router``'s convention)."""
    from queue_ratelimit.integrations.celery import RateLimitedTask
    from queue_ratelimit.integrations.celery_settings import limiter_for

    task = app.tasks.get(name)
    if task is not None:
        return isinstance(task, RateLimitedTask)
    return queue in limiter_for(app).configs


def _before(
    sender: Any = None,
    body: Any = None,
    exchange: Any = None,
    routing_key: Any = None,
    headers: Any = None,
    properties: Any = None,
    **_: Any,
) -> None:
    if not isinstance(headers, dict) or headers.get(TICKET_HEADER) is not None:
        return  # a requeued task's copy: its due set entry keeps it
    app, due = _publisher(sender, routing_key)
    if app is None or due is None:
        return
    at = time.time()
    headers[SENT_HEADER] = at
    task = app.tasks.get(sender)
    serializer = getattr(task, "serializer", None) or app.conf.task_serializer
    record = {"exchange": exchange, "routing_key": routing_key}
    record["properties"] = dict(properties or {})
    pending = _pending.__dict__.setdefault("tasks", {})
    if len(pending) >= _PENDING_MAX:  # publishes that raised never reach after_task_publish
        pending.clear()
    pending[headers.get("id")] = (app, due, serializer, at, record)


def _publisher(name: object, queue: object) -> tuple[Celery | None, DueTasks | None]:
    """The app publishing task ``name`` to ``queue`` and its due set, when it tracks it.

    The signal does not say which app publishes: the current app when it tracks this task,
    else the first that does (a process has one app, as a rule)."""
    candidates = []
    for app in list(_APPS):
        if _rate_limited(app, name, queue):
            due = tracked(app)
            if due is not None:
                candidates.append((app, due))
    current = celery.current_app._get_current_object()
    for app, due in candidates:
        if app is current:
            return app, due
    return candidates[0] if candidates else (None, None)


def _after(body: Any = None, headers: Any = None, routing_key: Any = None, **_: Any) -> None:
    pending = _pending.__dict__.get("tasks") or {}
    task = pending.pop(headers.get("id") if isinstance(headers, dict) else None, None)
    if task is None:
        return
    from queue_ratelimit.integrations.celery_due import encode

    app, due, serializer, at, record = task
    message = encode(app, {"published": {**record, "body": body, "headers": headers}}, serializer)
    try:
        due.sent(str(routing_key), str(headers["id"]), message, at)
    except BackendError as exc:
        _trouble.failed(exc)
    else:
        _trouble.succeeded()


def _received(request: Any = None, **_: Any) -> None:
    task = getattr(request, "task", None)
    app = getattr(task, "app", None)
    headers = getattr(request, "request_dict", None) or {}
    if app is None or app not in _APPS or headers.get(SENT_HEADER) is None:
        return
    if Ticket.loads(headers.get(TICKET_HEADER)).copy:  # (the worker's Request: its headers
        return  # are its request_dict) a copy: checked when it runs
    due = tracked(app)
    queue = (request.delivery_info or {}).get("routing_key")
    if due is None or not queue:
        return
    try:
        fresh = due.received(str(queue), request.id)
    except BackendError as exc:
        _trouble.failed(exc)  # it runs: at least once
        return
    _trouble.succeeded()
    if not fresh:
        request._queue_ratelimit_stale = True


class Request(CeleryRequest):  # type: ignore[misc]
    """``RateLimitedTask``'s request: an original found stale on receipt (a copy of it was
    published when it looked lost) is acknowledged and dropped instead of run.

    The drop goes through ``revoked()``, which the worker asks before it runs a request
    (a dropped one is not marked revoked in the result backend: its copy runs)."""

    _queue_ratelimit_stale = False
    _already_revoked: bool

    def revoked(self) -> bool:
        if not self._queue_ratelimit_stale:
            return bool(super().revoked())
        if not self._already_revoked:
            self._already_revoked = True
            log.info("queue_ratelimit: task %s: dropped, its copy runs instead", self.id)
            task_ready(self)
            self.acknowledge()
        return True


class Recovery:
    """One worker's beat, and its search for lost originals in the queues it consumes.

    Raises (``run``): ``BackendError`` when Redis or the broker fails.
    """

    def __init__(self, app: Celery, due: DueTasks) -> None:
        self.app, self.due = app, due
        self.lost_after = lost_after(app)
        self.member = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.searched = 0.0  # the death whose originals are all accounted for

    def run(self, consumer: Any, publish: Callable[[Claimed], None]) -> list[Claimed]:
        """Beat; publish (``publish(item)``) the originals found lost; return them.

        After a death, the queues are searched each second until no original published
        before it is tracked any more (each received, or claimed); then only the beat, until
        the next death."""
        now = time.time()
        died = self.due.beat(self.member, now, self.lost_after)
        if not died or died == self.searched:
            return []
        found, left = [], 0
        channel = consumer.connection.default_channel
        for queue in _queues(consumer):
            oldest = _oldest(channel, queue)
            if oldest is None:
                left += 1  # its oldest message is not tracked: cannot tell, ask again
                continue
            before = min(oldest, died, now - self.lost_after)
            claimed, waiting = self.due.lost(queue, before, horizon=died)
            left += waiting
            for item in claimed:
                log.warning(
                    "queue_ratelimit: task %s was lost on its way to a worker: published again",
                    item.task_id,
                )
                publish(item)
                found.append(item)
        if not left:
            self.searched = died  # every original from before that death is accounted for
        return found

    def reconnected(self) -> None:
        """The worker's consumer started again after its broker connection broke: a message
        it was taking then may be lost, as with a worker killed."""
        try:
            self.due.loss(time.time())
        except BackendError as exc:
            log.warning("queue_ratelimit: a broken broker connection not recorded: %s", exc)

    def stop(self) -> None:
        with contextlib.suppress(BackendError):  # else found dead: a search, nothing more
            self.due.leave(self.member)


def _queues(consumer: Any) -> list[str]:
    task_consumer = getattr(consumer, "task_consumer", None)
    return [q.name for q in getattr(task_consumer, "queues", None) or [] if q.name]


def _oldest(channel: Any, queue: str) -> float | None:
    """When the oldest message of ``queue`` was published (``inf``: none is queued;
    ``None``: cannot tell, the one first in line is untracked or was put back)."""
    prefix = getattr(channel, "global_keyprefix", "") or ""
    names = [prefix + channel._q_for_pri(queue, pri) for pri in channel.priority_steps]
    try:
        with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.lindex(name, -1)
            tails = pipe.execute()
    except Exception as exc:  # the broker's client: redis-py errors, kombu's
        raise BackendError(f"reading the broker's queue {queue} failed: {exc!r}") from exc
    oldest = math.inf
    for raw in tails:
        if raw is None:
            continue
        try:
            headers = json.loads(raw)["headers"]
            if headers.get("redelivered"):  # put back by kombu: its place says nothing
                return None
            oldest = min(oldest, float(headers[SENT_HEADER]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
    return oldest

"""Dramatiq: whether a thread sleeping for its slot would hold up another integration's work.

A Dramatiq worker process fetches messages of every queue it consumes (up to twice its
threads per queue, by default) into one local work queue, taken by its threads in order.
A thread that sleeps for its slot (up to ``max_wait``, plus a cooldown's rest) keeps each
message behind it waiting, even one of another integration whose own limit would let it
run now: on workers shared between integrations, a throttled integration's sleeper then
delays the other's tasks by up to its whole wait (a second or more after a 429), though
``max_sleepers`` lets only one of its tasks sleep at a time.

``RateLimitMiddleware`` asks :meth:`LocalWork.others_waiting` before a task acquires: when
a message of another integration (or of an actor without one) waits in the process with
every thread busy, the task sleeps at most ``crowded_wait``; a longer wait requeues it
with its slot reserved, and the thread takes the waiting message. Otherwise the task
sleeps in slices (:meth:`LocalWork.pause`), and when such a message comes to wait
meanwhile with more than ``crowded_wait`` of the sleep left, the task is requeued (reason
``yielded``) to come back when its slot would have come: the slot it was granted goes
unused (the upstream sees one call fewer), and the requeue counts against its budget
(which bounds how often one task gives way). A task on its last chance (no budget left)
and a breaker's half-open probe sleep their whole wait. Messages of the same integration
are left to ``max_sleepers`` and ``tenant_sleepers``, as on any worker.

A message counts as waiting for a thread only when its integration could run it soon: the
process remembers, per integration, the latest time its decisions held one of that
integration's tasks back to (a slot slept for, a requeue's reservation), and a message of an
integration held past ``crowded_wait`` from now does not count (a hold lasts
:data:`HOLD_MOST` at most). When every integration of a worker is throttled, their tasks
would only trade places, each requeue leaving a granted slot unused: they sleep for their
slots as on a worker of one integration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dramatiq.broker import Broker
from dramatiq.errors import ActorNotFound
from dramatiq.worker import Worker

__all__ = ["HOLD_MOST", "SLICE", "LocalWork"]

SLICE = 0.05
"""Seconds: how often a sleeping task looks for another integration's message behind it."""

HOLD_MOST = 5.0
"""Seconds at most that one decision holds an integration back here: a longer wait may be
one tenant's, or end early (an operator's reset, a breaker closed), and the integration's
next decision holds it again anyway."""


class LocalWork:
    """The messages one worker process holds for its threads (``Worker.work_queue``)."""

    def __init__(self, broker: Broker, worker: Worker, busy: Callable[[], int]) -> None:
        self.broker = broker
        self.queue = getattr(worker, "work_queue", None)
        self.threads = int(getattr(worker, "worker_threads", 1))
        self.busy = busy
        self._held: dict[object, float] = {}  # integration -> until when (monotonic)

    def hold(self, integration: str, seconds: float) -> None:
        """A decision in this process holds a task of ``integration`` back ``seconds`` (its
        slot, or its reservation's): the integration's slots are taken that far ahead, so a
        message of it would wait too (the latest such time counts; it passes with time)."""
        until = time.monotonic() + min(seconds, HOLD_MOST)
        if until > self._held.get(integration, 0.0):
            self._held[integration] = until

    def others_waiting(self, integration: str, most: float = 0.0) -> bool:
        """Whether a message of an integration other than ``integration`` (or of an ungated
        actor) waits in this process with every thread busy (``busy``: the messages taken
        and not yet settled), so that no thread will take it before one is given up, and
        its integration is not held back for more than ``most`` seconds from now."""
        queue = self.queue
        if queue is None:  # a Dramatiq without a local work queue: nothing is held up
            return False
        if self.busy() < self.threads:  # a free thread takes it
            return False
        with queue.mutex:
            items = list(queue.queue)
        soon = time.monotonic() + most
        for item in items:
            other = self._integration(item)
            if other != integration and self._held.get(other, 0.0) <= soon:
                return True
        return False

    def pause(self, integration: str, most: float, seconds: float) -> bool:
        """Sleep ``seconds`` (a task of ``integration`` waiting for its slot); stop early,
        returning False, when a message of another integration that could run has come to
        wait in this process and more than ``most`` of the sleep is left."""
        self.hold(integration, seconds)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if left <= most:
                time.sleep(left)
                break
            if self.others_waiting(integration, most):
                return False
            time.sleep(min(left - most, SLICE))
        return True

    def _integration(self, item: Any) -> object:
        """The integration of a work-queue item's actor (None when ungated or unknown)."""
        message: Any = getattr(item, "message", None)  # Dramatiq >= 2.2: _WorkQueueItem
        if message is None and isinstance(item, tuple) and len(item) > 1:
            message = item[-1]  # Dramatiq 1.16 to 2.1: (priority, message)
        try:
            actor = self.broker.get_actor(message.actor_name)
        except (ActorNotFound, AttributeError):
            return None
        return actor.options.get("integration")

"""Dramatiq: pausing a worker's integration queues while their breaker is open: the thread
that watches the breakers, and the middleware hooks that start it and tell it which queues
are idle."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dramatiq import Worker
from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from dramatiq.worker import ConsumerThread

from queue_ratelimit.integrations.polling import PollLog
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.logs import log_start
from queue_ratelimit.registry import config_sources

__all__ = ["BreakerWatch", "QueuePausing"]

log = logging.getLogger("queue_ratelimit.integrations.dramatiq")


class BreakerWatch(threading.Thread):
    """Pauses a worker's consumer of each integration queue while its breaker is open.

    Every ``poll`` seconds it reads the breaker of each consumed queue named like an
    integration. Open (and not yet due for its probe): the queue's consumer thread is paused
    once no message of the queue is unsettled in this worker (a RabbitMQ consumer closes its
    channel when it pauses), and the messages stay in the broker. Due for its probe, or
    closed: the consumer resumes; the first message through is the probe.
    """

    def __init__(
        self, limiter: Limiter, worker: Worker, poll: float, idle: Callable[[str], bool]
    ) -> None:
        super().__init__(name="queue_ratelimit-breaker", daemon=True)
        self.limiter = limiter
        self.poll = poll
        self.idle = idle  # no message of the queue is unsettled in this worker
        self.worker = worker
        self.paused: set[str] = set()
        self.confirmed: set[str] = set()
        self._stopped = threading.Event()
        self.trouble = PollLog(log)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5 * self.poll)

    def run(self) -> None:
        while not self._stopped.wait(self.poll):
            try:
                self.check()
            except Exception as exc:  # a Redis outage must not end the watch
                self.trouble.failed(exc)
            else:
                self.trouble.succeeded()

    def check(self) -> None:
        """Pause or resume each integration queue after its breaker."""
        limiter = self.limiter
        for queue, consumer in sorted(self.worker.consumers.copy().items()):
            if queue not in limiter.configs:
                continue
            snap = limiter.snapshot(queue)
            if snap.breaker_holds:
                self._hold(queue, consumer)
            elif queue in self.paused:
                consumer.resume()
                self.paused.discard(queue)
                self.confirmed.discard(queue)
                log.warning("queue_ratelimit: breaker of %s: queue resumed", queue)

    def _hold(self, queue: str, consumer: ConsumerThread) -> None:
        if queue not in self.paused:
            if self.idle(queue):
                consumer.pause()
                self.paused.add(queue)
        elif queue not in self.confirmed and consumer.paused_event.is_set():
            self.confirmed.add(queue)
            log.warning("queue_ratelimit: breaker of %s is open: queue paused", queue)


class QueuePausing(Middleware):
    """The hooks of ``RateLimitMiddleware`` that pause queues (it sets ``poll`` and
    ``consumer_backoff`` and gives ``limiter``)."""

    poll: float
    consumer_backoff: float | None

    def __init__(self) -> None:
        self._taken: dict[int, str] = {}  # id(message) -> queue, until acked or nacked
        self._lock = threading.Lock()
        self._watch: BreakerWatch | None = None

    @property
    def limiter(self) -> Limiter:
        raise NotImplementedError

    def take(self, message: MessageProxy) -> None:
        """``message`` is in this worker until acked or nacked (its queue is not idle)."""
        with self._lock:
            self._taken[id(message)] = q_name(message.queue_name)

    def busy(self) -> int:
        """How many messages this worker's threads have taken and not yet settled."""
        with self._lock:
            return len(self._taken)

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
        """Say which limiter the worker uses; start pausing the queues whose integration's
        breaker is open."""
        gated = [actor.options.get("integration") for actor in broker.actors.values()]
        log_start(
            log,
            self.limiter.backend.describe(),
            config_sources(),
            [name for name in gated if isinstance(name, str)],
        )
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

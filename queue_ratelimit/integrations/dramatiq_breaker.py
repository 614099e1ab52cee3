"""Dramatiq: the thread that pauses a worker's integration queues while their breaker is open."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dramatiq import Worker
from dramatiq.worker import ConsumerThread

from queue_ratelimit.integrations.polling import PollLog
from queue_ratelimit.limiter import Limiter

__all__ = ["BreakerWatch"]

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

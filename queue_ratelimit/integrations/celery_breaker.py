"""Celery: the consumer bootstep that pauses an integration's queue while its breaker is
open, on every worker (``install(app)`` adds it)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from celery import bootsteps

from queue_ratelimit.errors import ConfigError
from queue_ratelimit.integrations.polling import PollLog
from queue_ratelimit.logs import log_start
from queue_ratelimit.registry import config_sources

__all__ = ["BreakerStep"]

log = logging.getLogger("queue_ratelimit.integrations.celery")


class BreakerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Stops consuming an integration's queue while its breaker is open, on every worker.

    Each ``queue_ratelimit_poll`` seconds the step reads the breaker of every consumed queue
    named like an integration. Open (and not yet due for its probe): the consumer is
    cancelled, and the messages stay in the broker. Due for its probe, or closed: the queue
    is consumed again; the first task through is the probe.
    """

    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.paused: set[str] = set()
        self.timer_ref: Any = None
        self.trouble = PollLog(log)

    def start(self, consumer: Any) -> None:
        from queue_ratelimit.integrations.celery import check_tasks
        from queue_ratelimit.integrations.celery_settings import limiter_for

        try:
            check_tasks(consumer.app)  # invalid settings stop the worker at start
        except ConfigError as exc:
            log.critical("queue_ratelimit: %s", exc)
            raise SystemExit(1) from exc
        app = consumer.app
        limiter = limiter_for(app)
        path = app.conf.get("queue_ratelimit_config")
        files = {"toml_path": path} if str(path).endswith(".toml") else {"json_path": path}
        gated = [getattr(t, "integration", None) for t in list(app.tasks.values())]
        log_start(
            log,
            limiter.backend.describe(),
            config_sources(**files) if path else config_sources(),
            [name for name in gated if isinstance(name, str) and name in limiter.configs],
        )
        interval = float(consumer.app.conf.get("queue_ratelimit_poll") or 1.0)
        self.timer_ref = consumer.timer.call_repeatedly(interval, self.poll, (consumer,))

    def stop(self, consumer: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def poll(self, consumer: Any) -> None:
        """Pause or resume each integration queue after its breaker; never raises."""
        try:
            self._poll(consumer)
        except Exception as exc:  # nothing must kill the consumer's timer
            self.trouble.failed(exc)  # Redis down: the queues stay as they are, said once
        else:
            self.trouble.succeeded()

    def _poll(self, consumer: Any) -> None:
        from queue_ratelimit.integrations.celery_settings import limiter_for

        limiter = limiter_for(consumer.app)
        consuming = {q.name for q in consumer.task_consumer.queues}
        for queue in sorted((consuming | self.paused) & set(limiter.configs)):
            held = limiter.snapshot(queue).breaker_holds
            if held and queue not in self.paused:
                consumer.cancel_task_queue(queue)
                self.paused.add(queue)
                log.warning("queue_ratelimit: breaker of %s is open: queue paused", queue)
            elif not held and queue in self.paused:
                consumer.add_task_queue(queue)
                self.paused.discard(queue)
                log.warning("queue_ratelimit: breaker of %s: queue resumed", queue)

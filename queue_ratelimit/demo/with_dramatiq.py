"""The demo on Dramatiq: its in-process ``StubBroker`` and a ``Worker`` of 8 threads per
integration's queue.

The same tasks as the Celery run (one upstream call per message, keyed by the message id,
which a requeue keeps), gated by ``RateLimitMiddleware``. Needs the ``dramatiq`` extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import requests
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware, SkipMessage

from queue_ratelimit.demo.report import INTEGRATIONS, Recorder
from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.integrations.dramatiq import RateLimitMiddleware
from queue_ratelimit.limiter import Limiter

__all__ = ["dramatiq_run"]


class _Outcomes(Middleware):
    """Tells the recorder when a message ends: processed, or failed for good."""

    def __init__(self, recorder: Recorder, integration_of: dict[str, str]) -> None:
        self.recorder = recorder
        self.integration_of = integration_of

    def after_process_message(
        self,
        broker: Any,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        which = self.integration_of.get(message.actor_name)
        if which is None or isinstance(exception, SkipMessage):
            return
        if exception is None:
            self.recorder.task_done(which, message.message_id, ok=True)
        elif message.failed:
            self.recorder.task_done(which, message.message_id, ok=False)


@contextlib.contextmanager
def dramatiq_run(
    limiter: Limiter, url: str, concurrency: int
) -> Iterator[tuple[Recorder, Callable[[int], str]]]:
    """A started worker and its recorder, with ``send(n)``: enqueue the ``n``-th task."""
    broker = StubBroker()
    broker.emit_after("process_boot")
    gate = RateLimitMiddleware(limiter, poll=0.5)
    broker.add_middleware(gate)
    broker.add_middleware(CurrentMessage())
    session = requests.Session()
    actors = {
        name: _actor(broker, session, limiter, name, url, concurrency) for name in INTEGRATIONS
    }
    recorder = Recorder(limiter, gate.gate, set(), celery=False)
    broker.add_middleware(_Outcomes(recorder, {a.actor_name: n for n, a in actors.items()}))
    workers = [  # a worker per integration's queue, as a fleet runs them (docs/dramatiq.md)
        dramatiq.Worker(broker, queues={name}, worker_threads=concurrency, worker_timeout=50)
        for name in INTEGRATIONS
    ]

    def send(n: int) -> str:
        return str(actors[INTEGRATIONS[n % len(INTEGRATIONS)]].send(n).message_id)

    with recorder.listening():
        for worker in workers:
            worker.start()
        try:
            yield recorder, send
        finally:
            for worker in workers:
                worker.stop()
            broker.close()
            session.close()


def _actor(
    broker: StubBroker, session: requests.Session, limiter: Limiter, which: str, url: str, size: int
) -> Any:
    session.mount(f"{url}/{which}/", RateLimitedAdapter(limiter, which, pool_maxsize=size))

    def call(n: int) -> None:
        message = CurrentMessage.get_current_message()
        key = message.message_id if message is not None else n
        session.get(f"{url}/{which}/{key}", timeout=10).raise_for_status()

    return dramatiq.actor(
        actor_name=f"queue_ratelimit_demo_{which}",
        queue_name=which,
        broker=broker,
        integration=which,
        max_retries=0,
    )(call)

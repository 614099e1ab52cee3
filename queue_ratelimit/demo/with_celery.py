"""The demo on Celery: one embedded worker on the in-memory broker, or, given a Redis URL,
several worker processes on a Redis broker sharing the limiter state in Redis.

Worker processes are spawned (not forked) and report what they see (task ends, backoffs,
requeues) through a Redis list that the demo process drains into its ``Recorder``; every
key they use sits under the run's own prefix and is deleted at the end.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
import requests
from celery import Celery
from celery import signals as celery_signals
from celery.contrib.testing.worker import start_worker

from queue_ratelimit import signals
from queue_ratelimit.backends import open_backend
from queue_ratelimit.demo.report import INTEGRATIONS, Recorder, demo_config
from queue_ratelimit.errors import BackendError
from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.integrations.celery import (
    RateLimitedTask,
    configure,
    install,
    integration_router,
)
from queue_ratelimit.integrations.celery_due import due_for
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.tasks import TaskGate

__all__ = ["celery_fleet_run", "celery_run"]

Send = Callable[[int], str]


def _app(
    limiter: Limiter, url: str, session: requests.Session, size: int, **conf: Any
) -> tuple[Celery, dict[str, Any], TaskGate]:
    """The demo's Celery app: a ``RateLimitedTask`` per integration calling ``url``."""
    app = Celery("queue_ratelimit_demo")
    app.conf.update(
        task_routes=(integration_router,),
        task_acks_late=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        # a requeued task comes back as an ETA message, held by the worker's timer: the
        # default 1 s recheck would leave the last ones idle for up to that long
        worker_timer_precision=0.1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        **conf,
    )
    gate = configure(app, limiter)
    install(app)
    tasks = {name: _register(app, limiter, name, session, url, size) for name in INTEGRATIONS}
    return app, tasks, gate


def _register(
    app: Celery, limiter: Limiter, which: str, session: requests.Session, url: str, size: int
) -> Any:
    """One ``RateLimitedTask`` for ``which``; its 429s requeue it through the context hook."""
    session.mount(f"{url}/{which}/", RateLimitedAdapter(limiter, which, pool_maxsize=size))

    class DemoCall(RateLimitedTask):
        """One upstream call per task, keyed by the task id (the same across requeues)."""

        name = f"queue_ratelimit.demo.{which}"
        integration = which

        def run(self, n: int) -> int:
            session.get(f"{url}/{which}/{self.request.id}", timeout=10).raise_for_status()
            return n

    return app.register_task(DemoCall())


def _sender(tasks: dict[str, Any]) -> Send:
    def send(n: int) -> str:
        return str(tasks[INTEGRATIONS[n % len(INTEGRATIONS)]].apply_async(args=(n,)).id)

    return send


@contextlib.contextmanager
def celery_run(limiter: Limiter, url: str, concurrency: int) -> Iterator[tuple[Recorder, Send]]:
    """An embedded worker on the memory broker and its recorder, with ``send(n)``."""
    memory = {"broker_url": "memory://", "broker_transport_options": {"polling_interval": 0.05}}
    with requests.Session() as session:
        app, tasks, gate = _app(limiter, url, session, concurrency, **memory)
        recorder = Recorder(limiter, gate, {task.name for task in tasks.values()})
        with recorder.listening(), _embedded_worker(app, concurrency):
            yield recorder, _sender(tasks)


@contextlib.contextmanager
def _embedded_worker(app: Celery, concurrency: int) -> Iterator[None]:
    """One embedded worker consuming every integration queue; its queues purged after."""
    try:
        with start_worker(
            app,
            pool="threads",
            concurrency=concurrency,
            perform_ping_check=False,
            queues=list(INTEGRATIONS),
            shutdown_timeout=10,
        ) as worker:
            try:
                yield
            finally:  # a warm shutdown by remote control ends at once; otherwise the
                # worker's loop waits out its 2 s broker poll before it sees the stop
                app.control.shutdown(destination=[worker.hostname])
    finally:  # the memory broker is process-global: leave nothing for the next run
        with app.connection_for_write() as conn:
            for queue in INTEGRATIONS:
                conn.default_channel.queue_purge(queue)


# -- several worker processes on Redis --------------------------------------------------------


def _broker_conf(redis_url: str, prefix: str) -> dict[str, Any]:
    return {
        "broker_url": redis_url,
        "broker_transport_options": {"global_keyprefix": f"{prefix}-broker:"},
    }


@contextlib.contextmanager
def celery_fleet_run(
    limiter: Limiter,
    url: str,
    concurrency: int,
    *,
    redis_url: str,
    prefix: str,
    processes: int,
) -> Iterator[tuple[Recorder, Send]]:
    """``processes`` Celery worker processes on a Redis broker, each with ``concurrency``
    threads, sharing ``limiter``'s Redis state (under ``prefix``); the recorder and
    ``send(n)``."""
    events = f"{prefix}:demo-events"
    relay = redis.Redis.from_url(redis_url)
    settings = {"redis_url": redis_url, "prefix": prefix, "url": url, "events": events}
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(target=worker_process, args=({**settings, "index": i, "size": concurrency},))
        for i in range(processes)
    ]
    with requests.Session() as session:
        app, tasks, gate = _app(
            limiter, url, session, concurrency, **_broker_conf(redis_url, prefix)
        )
        recorder = Recorder(limiter, gate, set(), celery=False)
        for worker in workers:
            worker.start()
        try:
            _await_ready(relay, events, workers)
            with _draining(relay, events, recorder):
                yield recorder, _sender(tasks)
        finally:
            _stop(workers)
            due = due_for(app)
            if due is not None:
                with contextlib.suppress(BackendError):
                    due.purge()  # requeued tasks' copy tokens
            for key in relay.scan_iter(match=f"{prefix}-broker:*"):
                relay.delete(key)
            relay.delete(events)
            relay.close()


def _await_ready(relay: redis.Redis, events: str, workers: list[Any]) -> None:
    """Wait until every worker process said it is ready (60 s at most)."""
    deadline = time.monotonic() + 60
    ready = 0
    while ready < len(workers):
        raw: Any = relay.blpop([events], timeout=1)
        if raw is not None and json.loads(raw[1])["kind"] == "ready":
            ready += 1
        if time.monotonic() > deadline or any(not w.is_alive() for w in workers):
            raise RuntimeError(f"only {ready} of {len(workers)} demo worker processes started")


@contextlib.contextmanager
def _draining(relay: redis.Redis, events: str, recorder: Recorder) -> Iterator[None]:
    """Apply the workers' events to ``recorder`` from a background thread."""
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            raw: Any = relay.blpop([events], timeout=0.2)
            if raw is not None:
                _apply(recorder, json.loads(raw[1]))

    thread = threading.Thread(target=drain, name="qrl-demo-events", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _apply(recorder: Recorder, event: dict[str, Any]) -> None:
    kind, which, at = event["kind"], event.get("integration", ""), event.get("at")
    if kind == "done":
        recorder.task_done(which, event["task_id"], ok=event["ok"], at=at)
    elif kind == "backoff":
        recorder.record_backoff(which, event["decreased"], at=at)
    elif kind == "requeue":
        recorder.record_requeue(which)


def _stop(workers: list[Any]) -> None:
    for worker in workers:
        if worker.is_alive():
            worker.terminate()  # SIGTERM: Celery's warm shutdown
    for worker in workers:
        worker.join(timeout=15)
        if worker.is_alive():
            worker.kill()
            worker.join()


def worker_process(settings: dict[str, Any]) -> None:
    """A spawned worker process: one Celery worker of ``size`` threads, reporting its
    events to the demo process through the ``events`` list."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the demo's terminal belongs to its progress bar
    os.dup2(devnull, 2)
    redis_url, prefix = settings["redis_url"], settings["prefix"]
    limiter = Limiter(
        open_backend(redis_url, prefix=prefix), {n: demo_config(n) for n in INTEGRATIONS}
    )
    relay = redis.Redis.from_url(redis_url)

    def report(kind: str, **fields: Any) -> None:
        relay.rpush(
            settings["events"], json.dumps({"kind": kind, "at": time.monotonic(), **fields})
        )

    _relay_signals(report)
    with requests.Session() as session:
        app, _, _ = _app(
            limiter, settings["url"], session, settings["size"], **_broker_conf(redis_url, prefix)
        )
        celery_signals.worker_ready.connect(lambda **_: report("ready"), weak=False)
        app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={settings['size']}",
                f"--queues={','.join(INTEGRATIONS)}",
                f"--hostname=demo{settings['index']}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=ERROR",
            ]
        )


def _relay_signals(report: Callable[..., None]) -> None:
    """Forward this process's task ends, backoffs and requeues to the demo process."""

    def done(sender: Any = None, ok: bool = True, task_id: str | None = None, **_: Any) -> None:
        which = getattr(sender, "integration", None)
        if which:
            report("done", integration=which, task_id=task_id or sender.request.id, ok=ok)

    celery_signals.task_success.connect(lambda sender=None, **kw: done(sender), weak=False)
    celery_signals.task_failure.connect(
        lambda sender=None, task_id=None, **kw: done(sender, False, task_id), weak=False
    )
    signals.backoff.connect(
        lambda _s, **f: report("backoff", integration=f["integration"], decreased=f["decreased"]),
        weak=False,
    )
    signals.task_requeued.connect(
        lambda _s, **f: report("requeue", integration=f["integration"]), weak=False
    )

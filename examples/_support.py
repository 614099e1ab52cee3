"""Scaffolding shared by the examples: where their calls go, and the summary they print.

Not an example itself. Each example calls a vendor's real API when it finds a token, and
otherwise a local :class:`~queue_ratelimit.testing.HiddenLimitUpstream`: a real HTTP server
on 127.0.0.1 that enforces a limit the client is not told, answers 429 in the vendor's
dialect beyond it, and checks the ``Authorization`` header against a throwaway token. No
token is ever printed or logged.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from queue_ratelimit import IntegrationConfig, load_configs, merge_configs, signals
from queue_ratelimit.testing import HiddenLimitUpstream

REDIS_URL = "redis://127.0.0.1:6379/0"
"""Where the RQ examples find Redis when ``$REDIS_URL`` is not set."""


@dataclass(frozen=True)
class Api:
    """Where an example's calls go: the vendor (``upstream`` is None) or the local upstream.

    Attributes:
        token: the credential to send (the vendor's, or the local upstream's throwaway one).
        upstream: the local upstream, when no real token was found.
    """

    token: str
    upstream: HiddenLimitUpstream | None = None

    @property
    def local(self) -> bool:
        return self.upstream is not None

    def prefix(self, real: str) -> str:
        """Where to mount the rate-limited adapter: ``real``, or the local upstream."""
        return real if self.upstream is None else f"{self.upstream.url}/"

    def local_url(self, bucket: str, item: str, query: str = "") -> str:
        """The local upstream's URL for one task's call; ``bucket`` has its own hidden limit."""
        if self.upstream is None:
            raise RuntimeError("no local upstream: a real token was found")
        return f"{self.upstream.url}/{bucket}/{item}" + (f"?{query}" if query else "")


@contextmanager
def open_api(
    token: str | None, *, hidden_limit: float, dialect: str, require_token: bool = True
) -> Iterator[Api]:
    """The vendor's API when ``token`` is set, else a local upstream for the run's length.

    Args:
        token: the real credential, or None (or empty) to run locally.
        hidden_limit: calls per second each bucket of the local upstream accepts.
        dialect: how the local upstream says 429 (``retry-after``, ``github``,
            ``x-ratelimit``, ``ietf`` or ``none``; see ``queue_ratelimit.testing``).
        require_token: the local upstream answers 401 to calls without the token.
    """
    if token:
        yield Api(token)
        return
    local_token = secrets.token_urlsafe(16)
    required = local_token if require_token else None
    with HiddenLimitUpstream(
        hidden_limit, 1.0, headers=dialect, require_token=required
    ) as upstream:
        yield Api(local_token, upstream)


def configs_for(
    api: Api, integration: str, local: Mapping[str, object]
) -> dict[str, IntegrationConfig]:
    """The integration configs to run with.

    Against the real API: the built-ins with your overrides (``load_configs``). Locally:
    the built-ins with ``local`` applied to ``integration``, so a run takes seconds rather
    than minutes (the vendors' real limits are a few calls per second or less).
    """
    return merge_configs({integration: local}) if api.local else load_configs()


def run_id() -> str:
    """A short id naming this run's queues and Redis keys, so concurrent runs never meet."""
    return uuid.uuid4().hex[:8]


def redis_url() -> str:
    """``$REDIS_URL`` or the default; exits with a hint when no Redis answers there."""
    import redis

    url = os.environ.get("REDIS_URL") or REDIS_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1.0).ping()
    except redis.RedisError:  # the URL may hold a password: it is not printed
        where = "$REDIS_URL" if os.environ.get("REDIS_URL") else REDIS_URL
        raise SystemExit(f"the RQ examples need Redis, and none answers at {where}") from None
    return url


def require(name: str) -> str:
    """An environment variable the real-API run needs; exits with a hint when it is unset."""
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is required to call the real API (see the docstring)")
    return value


class Tally:
    """Counts an integration's backoffs (429s met) and requeues, from the limiter's signals."""

    def __init__(self, integration: str) -> None:
        self.integration = integration
        self.backoffs = 0
        self.requeues = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Tally:
        signals.backoff.connect(self._backoff, weak=False)
        signals.task_requeued.connect(self._requeued, weak=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        signals.backoff.disconnect(self._backoff)
        signals.task_requeued.disconnect(self._requeued)

    def _backoff(self, sender: object, **fields: Any) -> None:
        if fields["integration"] == self.integration:
            with self._lock:
                self.backoffs += 1

    def _requeued(self, sender: object, **fields: Any) -> None:
        if fields["integration"] == self.integration:
            with self._lock:
                self.requeues += 1


def report(name: str, items: Collection[str], done: Collection[str], tally: Tally, api: Api) -> int:
    """Print the run's one-line summary; the exit status: 0 when no task was lost.

    ``items`` names what each task was given, ``done`` what the finished tasks returned.
    Locally the upstream also proves that each task's call succeeded exactly once (the
    items are then the calls' ids, the last part of their URLs).
    """
    lost = sum((Counter(items) - Counter(done)).values())
    line = (
        f"{name}: {len(items)} tasks, {len(items) - lost} done, {lost} lost; "
        f"{tally.backoffs} backoffs, {tally.requeues} requeues"
    )
    ok = lost == 0
    if api.upstream is not None:
        once = api.upstream.served_once(set(items))
        calls = sum(api.upstream.status_counts.values())
        line += f"; local upstream: {calls} calls, {api.upstream.count(429)} answered 429, " + (
            "every task served once" if once else "NOT every task served once"
        )
        ok = ok and once
    print(line, flush=True)
    return 0 if ok else 1


# -- embedded workers: what `celery worker`, `dramatiq` and `rq worker` run, in this process --


@contextmanager
def celery_worker(app: Any, queues: list[str], threads: int = 4) -> Iterator[None]:
    """A real Celery worker for ``app`` in this process, consuming ``queues``.

    What ``celery -A app worker -P threads -c 4 -Q <queues>`` runs; stopped afterwards by
    the remote-control ``shutdown`` command (a warm shutdown, at once).
    """
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        app, pool="threads", concurrency=threads, perform_ping_check=False, queues=queues
    ) as worker:
        yield
        app.control.shutdown(destination=[worker.hostname])


@contextmanager
def dramatiq_worker(broker: Any, threads: int = 4) -> Iterator[None]:
    """A real Dramatiq worker for ``broker`` in this process (what ``dramatiq app`` runs).

    Dramatiq logs each requeue as ``Message ... was skipped.`` (a warning); the examples
    keep their output to their summary, so that logger is quieted here.
    """
    import logging

    import dramatiq

    logging.getLogger("dramatiq.worker.WorkerThread").setLevel(logging.ERROR)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        yield
    finally:
        worker.stop()


def rq_work(
    queue: Any, make_worker: Callable[[], Any], jobs: list[Any], timeout: float = 60.0
) -> list[Any]:
    """Run burst passes of ``make_worker()``'s worker until every job has ended; the results.

    What ``rq worker --with-scheduler`` does for good: each pass first lets the scheduler
    enqueue the requeued jobs whose slot has come, then works the queue empty. Between
    passes it sleeps until the next requeued job's slot (RQ schedules in whole seconds).

    Raises:
        TimeoutError: jobs were still pending after ``timeout`` seconds.
    """
    from rq.job import JobStatus

    ended = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED)
    deadline = time.monotonic() + timeout
    while True:
        make_worker().work(burst=True, with_scheduler=True, logging_level="WARNING")
        pending = [job for job in jobs if job.get_status(refresh=True) not in ended]
        if not pending:
            return [job.return_value() for job in jobs if job.get_status() == JobStatus.FINISHED]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs still pending after {timeout:g} s")
        registry = queue.scheduled_job_registry
        slots = [registry.get_scheduled_time(job_id) for job_id in registry.get_job_ids()]
        due = min((slot.timestamp() for slot in slots), default=time.time())
        time.sleep(min(1.0, max(0.05, due - time.time())))


def forget_rq_run(queue: Any, jobs: list[Any], backend: Any) -> None:
    """Delete what an RQ run left in Redis: its jobs, its queue and its limiter keys."""
    for job in jobs:
        job.delete()  # with its results, out of every registry
    queue.delete(delete_jobs=True)
    keys = list(backend.client.scan_iter(match=f"{{{backend.prefix}:*"))
    if keys:
        backend.client.delete(*keys)

"""Watch the product find a hidden rate limit, end to end, with no server to install.

``run_demo()`` starts a local HTTP API that enforces a limit it does not publish
(:class:`~queue_ratelimit.testing.HiddenLimitUpstream`: per integration, ``hidden_limit``
calls per second, beyond that 429 with ``Retry-After``), a real Celery app on the in-memory
broker with one embedded worker (8 threads), and a ``RateLimitedTask`` per integration
(``notion``, ``github``) whose body calls the API through ``RateLimitedAdapter``. The
limiter starts at a cautious 3 calls/s per integration and finds the limit by AIMD; a 429
sends its task back to the broker. A live progress bar shows each integration's rate, the
429s and the requeues; a table then compares the achieved rate with the hidden limit and
counts lost and duplicated tasks, both of which must be 0::

    from queue_ratelimit.demo import run_demo

    summary = run_demo(plot="rate.png")       # about 20 s; plot= needs matplotlib
    assert summary.lost == summary.duplicates == 0

With ``redis_url`` the limiter state lives in Redis (under a prefix of its own, deleted
afterwards) while the broker stays in memory. Needs the ``celery``, ``http`` and ``cli``
extras; ``plot`` needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from celery import Celery
from celery.contrib.testing.worker import start_worker
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.demo_report import (
    INTEGRATIONS,
    PLOT_HINT,
    DemoSummary,
    Recorder,
    plot_rates,
    summarize,
    summary_table,
)
from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.integrations.celery import (
    RateLimitedTask,
    configure,
    install,
    integration_router,
)
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.testing import HiddenLimitUpstream

__all__ = ["DemoSummary", "run_demo"]

CONCURRENCY = 8
FRAMEWORKS = ("celery", "dramatiq")
SAMPLE_EVERY = 0.1


def demo_config(name: str) -> IntegrationConfig:
    """A cautious start (3/s) and a generous ceiling (200/s): AIMD must find the limit.

    ``max_wait`` covers the worker's threads at the starting rate (8 threads at 3/s), so
    the first tasks wait in the worker instead of reserving slots paced at 3/s for the
    whole backlog, which would hold the run to the starting rate. An increase of 0.3/s per
    success climbs to 20/s in about 6 s and overshoots a limit by only a few calls/s.
    """
    return IntegrationConfig(
        name=name,
        rate_limit_per_sec=3.0,
        burst_size=1.0,
        increase_factor=0.3,
        decrease_factor=0.7,
        min_rate=0.5,
        max_rate=200.0,
        max_wait=3.0,
        max_backoff=30.0,
    )


def run_demo(
    *,
    tasks: int = 300,
    hidden_limit: float = 20.0,
    seconds_budget: float = 60.0,
    plot: str | Path | None = None,
    console: Console | None = None,
    redis_url: str | None = None,
    framework: str = "celery",
    redis_prefix: str | None = None,
) -> DemoSummary:
    """Run ``tasks`` rate-limited tasks against an upstream with a hidden limit; summarise.

    Args:
        tasks: tasks to enqueue, split between ``notion`` and ``github``.
        hidden_limit: calls per second the upstream allows each integration (1 s window).
        seconds_budget: the run fails with ``TimeoutError`` if the tasks take longer.
        plot: where to write a PNG of the rate over time (needs matplotlib).
        console: where the progress bar and the table go (default: the terminal).
        redis_url: keep the limiter state in this Redis instead of in memory.
        framework: ``"celery"`` (its in-memory broker and an embedded worker) or
            ``"dramatiq"`` (its ``StubBroker`` and an in-process ``Worker``).
        redis_prefix: the Redis key prefix (default: a fresh one); its keys are deleted at
            the end, so never pass your workers' prefix.

    Raises:
        ValueError: an argument is invalid or the framework is not supported.
        ImportError: ``plot`` is given and matplotlib is not installed (checked first).
        TimeoutError: the tasks did not finish within ``seconds_budget``.
        BackendError: ``redis_url`` is given and Redis cannot be reached.
    """
    _check(tasks, hidden_limit, seconds_budget, framework)
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise ImportError(PLOT_HINT)
    console = console if console is not None else Console()
    limiter, close = _open_limiter(redis_url, redis_prefix)
    try:
        for name in INTEGRATIONS:
            limiter.snapshot(name)  # an unreachable Redis fails here, before anything starts
        with HiddenLimitUpstream(hidden_limit, 1.0, headers="retry-after") as upstream:
            run = _runner(framework)
            with run(limiter, upstream.url, CONCURRENCY) as (recorder, send):
                ids: dict[str, list[str]] = {name: [] for name in INTEGRATIONS}
                recorder.start = time.monotonic()
                recorder.sample()
                for n in range(tasks):
                    ids[INTEGRATIONS[n % len(INTEGRATIONS)]].append(send(n))
                _watch(console, recorder, upstream, tasks, seconds_budget)
            summary = summarize(recorder, upstream, ids, hidden_limit)
    finally:
        close()
    console.print(summary_table(summary, recorder))
    if plot is not None:
        plot_rates(Path(plot), recorder, hidden_limit)
        console.print(f"rate chart written to {plot}")
    return summary


def _check(tasks: int, hidden_limit: float, seconds_budget: float, framework: str) -> None:
    if framework not in FRAMEWORKS:
        raise ValueError(
            f"framework {framework!r} is not supported by the demo: use one of {FRAMEWORKS} "
            "(rq needs a Redis server: see docs/rq.md)"
        )
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
        raise ValueError(f"tasks must be a whole number >= 1, not {tasks!r}")
    if not hidden_limit > 0 or not seconds_budget > 0:
        raise ValueError("hidden_limit and seconds_budget must be > 0")


def _open_limiter(redis_url: str | None, prefix: str | None) -> tuple[Limiter, Callable[[], None]]:
    """The demo's limiter and how to dispose of its state."""
    configs = {name: demo_config(name) for name in INTEGRATIONS}
    if redis_url is None:
        return Limiter(MemoryBackend(), configs), lambda: None
    import redis

    from queue_ratelimit.backends.redis import RedisBackend

    backend = RedisBackend(redis_url, prefix=prefix or f"qrl-demo-{uuid.uuid4().hex[:8]}")

    def close() -> None:
        keys = [key for name in INTEGRATIONS for key in backend.keys_for(name, None)]
        with contextlib.suppress(redis.RedisError):  # best effort: keys expire when idle
            backend.client.delete(*keys)
        backend.client.close()

    return Limiter(backend, configs), close


Runner = Callable[
    [Limiter, str, int], contextlib.AbstractContextManager[tuple[Recorder, Callable[[int], str]]]
]


def _runner(framework: str) -> Runner:
    if framework == "dramatiq":
        try:
            from queue_ratelimit.demo_dramatiq import dramatiq_run
        except ImportError as exc:
            raise ImportError(
                "the dramatiq demo needs Dramatiq: pip install 'queue_ratelimit[dramatiq]'"
            ) from exc
        return dramatiq_run
    return _celery_run


@contextlib.contextmanager
def _celery_run(
    limiter: Limiter, url: str, concurrency: int
) -> Iterator[tuple[Recorder, Callable[[int], str]]]:
    """A real Celery worker on the memory broker and its recorder, with ``send(n)``:
    enqueue the ``n``-th task."""
    app = Celery("queue_ratelimit_demo", broker="memory://", backend="cache+memory://")
    app.conf.update(
        task_routes=(integration_router,),
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"polling_interval": 0.05},
    )
    gate = configure(app, limiter)
    install(app)
    with requests.Session() as session:
        registered = {name: _register(app, limiter, name, session, url) for name in INTEGRATIONS}
        recorder = Recorder(limiter, gate, {task.name for task in registered.values()})

        def send(n: int) -> str:
            return str(registered[INTEGRATIONS[n % len(INTEGRATIONS)]].apply_async(args=(n,)).id)

        with recorder.listening(), _worker(app, concurrency):
            yield recorder, send


def _register(
    app: Celery, limiter: Limiter, which: str, session: requests.Session, url: str
) -> Any:
    """One ``RateLimitedTask`` for ``which``; its 429s requeue it through the context hook."""
    session.mount(f"{url}/{which}/", RateLimitedAdapter(limiter, which, pool_maxsize=CONCURRENCY))

    class DemoCall(RateLimitedTask):
        """One upstream call per task, keyed by the task id (the same across requeues)."""

        name = f"queue_ratelimit.demo.{which}"
        integration = which

        def run(self, n: int) -> int:
            session.get(f"{url}/{which}/{self.request.id}", timeout=10).raise_for_status()
            return n

    return app.register_task(DemoCall())


@contextlib.contextmanager
def _worker(app: Celery, concurrency: int) -> Iterator[None]:
    """One embedded worker consuming every integration queue; its queues purged after."""
    try:
        with start_worker(
            app,
            pool="threads",
            concurrency=concurrency,
            perform_ping_check=False,
            queues=list(INTEGRATIONS),
            shutdown_timeout=10,
        ):
            yield
    finally:  # the memory broker is process-global: leave nothing for the next run
        with app.connection_for_write() as conn:
            for queue in INTEGRATIONS:
                conn.default_channel.queue_purge(queue)


def _watch(
    console: Console,
    recorder: Recorder,
    upstream: HiddenLimitUpstream,
    total: int,
    seconds_budget: float,
) -> None:
    """Show progress and sample the rates until every task is done or the budget is spent."""
    columns = (
        TextColumn("[bold]tasks"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("tasks", total=total, status="")
        while True:
            recorder.sample()
            done = recorder.done()
            progress.update(bar, completed=done, status=recorder.status(upstream))
            if done >= total:
                return
            if recorder.now() > seconds_budget:
                raise TimeoutError(
                    f"the demo did not finish within seconds_budget={seconds_budget:g}: "
                    f"{done} of {total} tasks done, {recorder.status(upstream)}"
                )
            time.sleep(SAMPLE_EVERY)


if __name__ == "__main__":
    import sys

    run_demo(plot=sys.argv[1] if len(sys.argv) > 1 else None)

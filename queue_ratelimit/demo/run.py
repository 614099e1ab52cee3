"""Watch the product find a hidden rate limit, end to end, with no server to install.

``run_demo()`` starts a local HTTP API that enforces a limit it does not publish
(:class:`~queue_ratelimit.testing.HiddenLimitUpstream`: per integration, ``hidden_limit``
calls per second, beyond that 429 with ``Retry-After``), a real Celery app on the in-memory
broker with one embedded worker (8 threads), and a ``RateLimitedTask`` per integration
(``notion``, ``github``) whose body calls the API through ``RateLimitedAdapter``. The
limiter starts at a cautious 4 calls/s per integration (a fifth of the default hidden limit)
and finds the limit in its start phase; a 429 sends its task back to the broker. A live
progress bar shows each integration's rate, the 429s and the requeues; a table then
compares the achieved rate with the hidden limit and counts lost and duplicated tasks, both
of which must be 0::

    from queue_ratelimit.demo import run_demo

    summary = run_demo(plot="rate.png")       # about 25 s; plot= needs matplotlib
    assert summary.lost == summary.duplicates == 0

With ``redis_url`` the run is a small fleet: the limiter state and the broker live in Redis
(under a prefix of its own, deleted afterwards) and ``workers`` Celery worker processes
share the limit. ``framework="dramatiq"`` runs the same on Dramatiq's ``StubBroker``. Needs
the ``celery``, ``http`` and ``cli`` extras (and ``dramatiq`` for Dramatiq); ``plot`` needs
matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from queue_ratelimit.backends import open_backend
from queue_ratelimit.demo.report import (
    INTEGRATIONS,
    PLOT_HINT,
    DemoSummary,
    Recorder,
    demo_config,
    plot_rates,
    summarize,
    summary_table,
)
from queue_ratelimit.demo.with_celery import Send, celery_fleet_run, celery_run
from queue_ratelimit.errors import BackendError
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.testing import HiddenLimitUpstream

__all__ = ["DemoSummary", "run_demo"]

CONCURRENCY = 8
FRAMEWORKS = ("celery", "dramatiq")
SAMPLE_EVERY = 0.1


def run_demo(
    *,
    tasks: int = 800,
    hidden_limit: float = 20.0,
    seconds_budget: float = 60.0,
    plot: str | Path | None = None,
    console: Console | None = None,
    redis_url: str | None = None,
    framework: str = "celery",
    redis_prefix: str | None = None,
    workers: int = 2,
) -> DemoSummary:
    """Run ``tasks`` rate-limited tasks against an upstream with a hidden limit; summarise.

    Args:
        tasks: tasks to enqueue, split between ``notion`` and ``github``.
        hidden_limit: calls per second the upstream allows each integration (1 s window).
        seconds_budget: the run fails with ``TimeoutError`` if the tasks take longer.
        plot: where to write a PNG of the rate over time (needs matplotlib).
        console: where the progress bar and the table go (default: the terminal).
        redis_url: keep the limiter state in this Redis instead of in memory; on Celery,
            the broker too, with ``workers`` worker processes.
        framework: ``"celery"`` (its in-memory broker and an embedded worker) or
            ``"dramatiq"`` (its ``StubBroker`` and an in-process ``Worker``).
        redis_prefix: the Redis key prefix (default: a fresh one); its keys are deleted at
            the end, so never pass your workers' prefix.
        workers: Celery worker processes (of 8 threads each) when ``redis_url`` is given.

    Raises:
        ValueError: an argument is invalid or the framework is not supported.
        ImportError: ``plot`` is given and matplotlib is not installed (checked first).
        TimeoutError: the tasks did not finish within ``seconds_budget``.
        BackendError: ``redis_url`` is given and Redis cannot be reached.
    """
    _check(tasks, hidden_limit, seconds_budget, framework)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, not {workers!r}")
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise ImportError(PLOT_HINT)
    console = console if console is not None else Console()
    prefix = redis_prefix or f"qrl-demo-{uuid.uuid4().hex[:8]}"
    limiter, close = _open_limiter(redis_url, prefix)
    try:
        for name in INTEGRATIONS:
            limiter.snapshot(name)  # an unreachable Redis fails here, before anything starts
        with HiddenLimitUpstream(hidden_limit, 1.0, headers="retry-after") as upstream:
            run = _runner(framework, redis_url, prefix, workers)
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


def _open_limiter(redis_url: str | None, prefix: str) -> tuple[Limiter, Callable[[], None]]:
    """The demo's limiter and how to dispose of its state."""
    configs = {name: demo_config(name) for name in INTEGRATIONS}
    backend = open_backend(redis_url or "memory://", prefix=prefix)

    def close() -> None:
        with contextlib.suppress(BackendError):  # best effort: keys expire when idle
            for name in INTEGRATIONS:
                backend.purge(name)

    return Limiter(backend, configs), close


Runner = Callable[[Limiter, str, int], contextlib.AbstractContextManager[tuple[Recorder, Send]]]


def _runner(framework: str, redis_url: str | None, prefix: str, workers: int) -> Runner:
    if framework == "dramatiq":
        try:
            from queue_ratelimit.demo.with_dramatiq import dramatiq_run
        except ImportError as exc:
            raise ImportError(
                "the dramatiq demo needs Dramatiq: pip install 'queue_ratelimit[dramatiq]'"
            ) from exc
        return dramatiq_run
    if redis_url is not None:
        return functools.partial(
            celery_fleet_run, redis_url=redis_url, prefix=prefix, processes=workers
        )
    return celery_run


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

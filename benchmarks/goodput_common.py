"""What the goodput benchmark's driver and its worker apps share: settings, bookkeeping, calls.

The worker apps (``goodput_celery``, ``goodput_dramatiq``, ``goodput_rq``) read their run from
the environment the driver starts them with (``GP_*``), and every task records what it did in
Redis, keyed by its own id (the same across requeues and retries):

* ``<run>:done``: how many times the body completed (``> 1``: the task ran twice), and
  ``<run>:t``: when it last completed (epoch seconds, for latencies);
* ``<run>:sleep``: seconds slept inside the worker (tenacity's waits, or this project's
  in-worker waits reported by the ``acquired`` signal);
* ``<run>:requeues``: times the task went back to the broker (this project's requeues,
  Celery's and Dramatiq's retries);
* ``<run>:deliveries``: Celery only: deliveries of the task a worker began to run (one more
  than its broker hops: requeues, parking and recheck hops, stale copies dropped);
* ``<run>:failed``: tasks that failed visibly, with the error's name.

With ``GP_TRACE=<dir>`` in the driver's environment, each of this project's workers also
appends every decision about a task (the ``acquired``, ``throttled``, ``task_requeued`` and
``reservation_redeemed`` signals: time, pid and the signal's fields) to
``<dir>/<pid>.jsonl``, one JSON object a line: what a task met, decision by decision, when a
figure needs explaining.

Every task makes one call, ``GET <base>/<bucket>/<task id>``: ``bucket`` is the tenant (the
upstream keeps a hidden limit per bucket), so the upstream can tell which task a call
belongs to.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
import requests

from queue_ratelimit import IntegrationConfig, LimitConfig, Limiter
from queue_ratelimit.http import RateLimitedAdapter

REDIS_ENV, RUN_ENV, QUEUES_ENV, RATE_ENV = "GP_REDIS", "GP_RUN", "GP_QUEUES", "GP_RATE"
SHARED_ENV = "GP_SHARED"
FAIR_ENV = "GP_FAIR"  # this project: the app-wide limit stated, shared fairly
IDLE_TTL_ENV = "GP_IDLE_TTL"
TRACE_ENV = "GP_TRACE"  # a folder: this project's decisions, per task (see the docstring)
TRACED = ("acquired", "throttled", "task_requeued", "reservation_redeemed")
NO_TENANT = "x"
"""The bucket of calls made without a tenant."""

OURS_START_FRACTION = 0.2  # of L: the conservative starting rate
OURS_MAX_FACTOR = 10.0  # of L: the generous ceiling


def ours_config(
    name: str, hidden_limit: float, shared: bool | None = None, fair: bool | None = None
) -> IntegrationConfig:
    """This project's settings for every integration of the benchmark (the same for all).

    The client does not know the limit: it starts at L/5 and may climb to 10 L. The AIMD
    steps are the demo's (``queue_ratelimit.demo``); ``max_wait`` is the library's default,
    1 s, which covers 4 workers at the starting rate, so the first tasks wait in the worker
    rather than reserving slots paced at the starting rate (see benchmarks/README.md).
    Everything else is the library's default, ``max_sleepers`` included (none: the
    workers are as good as dedicated to one queue, the other being empty), except when
    ``shared`` (default: ``GP_SHARED=1`` in the environment): the workers serve several
    integrations' queues, as in the integrations scenario, and ``max_sleepers`` is 1, as
    docs/configuration.md advises. With ``fair`` (default: ``GP_FAIR=1``), as in the fairness
    scenario, the upstream's app-wide limit is known and stated as an ``app_limit`` of L,
    the 429s it answers lowering that level (``app_backoffs="app"``), and the tenants share
    it fairly (``docs/limits.md``); each tenant's own level is the same as above.
    """
    if shared is None:
        shared = os.environ.get(SHARED_ENV) == "1"
    if fair is None:
        fair = os.environ.get(FAIR_ENV) == "1"
    app = LimitConfig("app", hidden_limit, 1.0, hidden_limit / 2, hidden_limit, 0.3, 0.7)
    return IntegrationConfig(
        name=name,
        rate_limit_per_sec=hidden_limit * OURS_START_FRACTION,
        burst_size=1.0,
        increase_factor=0.3,
        decrease_factor=0.7,
        min_rate=0.5,
        max_rate=hidden_limit * OURS_MAX_FACTOR,
        max_wait=1.0,
        max_sleepers=1 if shared else None,
        max_backoff=30.0,
        requeue_budget=100,
        app_limit=app if fair else None,
        app_backoffs="app",
    )


def idle_ttl() -> float:
    """This project's ``idle_ttl`` in the workers (``GP_IDLE_TTL``; the library's default,
    an hour, unless the restart scenario shortens it)."""
    return float(os.environ.get(IDLE_TTL_ENV) or 3600.0)


def env(name: str, default: str | None = None) -> str:
    """A ``GP_*`` setting; a missing one without default is a clear error in the worker log."""
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"goodput worker: {name} is not set")
    return value


def queues() -> tuple[str, str]:
    """The worker's two queues, named like this project's integrations: (api, other); the
    driver, which imports the worker apps too, gets placeholder names."""
    api, other = os.environ.get(QUEUES_ENV, "api,other").split(",")
    return api, other


class Records:
    """A task's bookkeeping in Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis, run: str) -> None:
        self.client = client
        self.run = run

    def key(self, what: str) -> str:
        return f"{self.run}:{what}"

    def done(self, task_id: str) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hincrby(self.key("done"), task_id, 1)
            pipe.hset(self.key("t"), task_id, repr(time.time()))
            pipe.execute()

    def slept(self, task_id: str, seconds: float) -> None:
        self.client.hincrbyfloat(self.key("sleep"), task_id, seconds)

    def requeued(self, task_id: str) -> None:
        self.client.hincrby(self.key("requeues"), task_id, 1)

    def delivered(self, task_id: str) -> None:
        self.client.hincrby(self.key("deliveries"), task_id, 1)

    def failed(self, task_id: str, error: str) -> None:
        self.client.hset(self.key("failed"), task_id, error)

    def fetch(self, what: str, ids: Iterable[str]) -> list[Any]:
        """The ``what`` field of each id, in order (None when absent)."""
        ids = list(ids)
        values: list[Any] = self.client.hmget(self.key(what), ids) if ids else []  # type: ignore[assignment]
        return values


@functools.cache
def records() -> Records:
    """The worker's records (one client per process; redis-py reconnects after a fork)."""
    return Records(redis.Redis.from_url(env(REDIS_ENV)), env(RUN_ENV))


def call_url(base: str, tenant: str, task_id: str) -> str:
    return f"{base}/{tenant or NO_TENANT}/{task_id}"


@functools.cache
def plain_session() -> requests.Session:
    """The peers' HTTP client: plain requests, one session per process."""
    return requests.Session()


_ours_sessions: dict[tuple[str, str], requests.Session] = {}


def call_ours(
    limiter: Callable[[], Limiter], integration: str, base: str, tenant: str, task_id: str
) -> None:
    """This project's one call, through ``RateLimitedAdapter`` (a session per upstream and
    integration in each process, its limiter made once), then the task recorded done."""
    session = _ours_sessions.get((base, integration))
    if session is None:
        session = _ours_sessions[base, integration] = requests.Session()
        session.mount(f"{base}/", RateLimitedAdapter(limiter(), integration))
    session.get(call_url(base, tenant, task_id), timeout=10).raise_for_status()
    records().done(task_id)


def call_plain(base: str, tenant: str, task_id: str) -> None:
    """One call; a 429 (or any error status) raises ``requests.HTTPError``."""
    plain_session().get(call_url(base, tenant, task_id), timeout=10).raise_for_status()


def retry_after(exc: BaseException) -> float:
    """tenacity's documented ``wait_exception`` recipe: the 429's ``Retry-After``, else 1 s."""
    response = getattr(exc, "response", None)
    if response is not None and response.status_code == 429:
        return float(response.headers.get("Retry-After", "1"))
    return 1.0


def is_429(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    return (
        isinstance(exc, requests.HTTPError)
        and response is not None
        and (response.status_code == 429)
    )


def call_with_tenacity(base: str, tenant: str, task_id: str) -> None:
    """Sleep-on-429 inside the task: tenacity honouring ``Retry-After``, sleeps recorded."""
    from tenacity import (
        retry,
        retry_if_exception,
        stop_after_delay,
        wait_exception,
        wait_random,
    )

    def sleep(seconds: float) -> None:
        records().slept(task_id, seconds)
        time.sleep(seconds)

    retrying: Callable[..., None] = retry(
        retry=retry_if_exception(is_429),
        wait=wait_exception(retry_after) + wait_random(0, 0.2),
        stop=stop_after_delay(300),
        sleep=sleep,
        reraise=True,
    )(call_plain)
    retrying(base, tenant, task_id)


def record_our_signals() -> None:
    """Count this project's in-worker waits and requeues per task (connect in workers only)."""
    from queue_ratelimit import signals

    def waited(sender: object, **fields: Any) -> None:
        if fields.get("task_id") and fields.get("wait", 0) > 0:
            records().slept(str(fields["task_id"]), float(fields["wait"]))

    def requeued(sender: object, **fields: Any) -> None:
        if fields.get("task_id"):
            records().requeued(str(fields["task_id"]))

    signals.acquired.connect(waited, weak=False)
    signals.task_requeued.connect(requeued, weak=False)
    trace = os.environ.get(TRACE_ENV)
    if trace:
        for name in TRACED:
            getattr(signals, name).connect(_tracer(trace, name), weak=False)


def _tracer(folder: str, kind: str) -> Callable[..., None]:
    """A receiver appending each ``kind`` signal to this process's trace file."""
    path = os.path.join(folder, f"{os.getpid()}.jsonl")

    def write(sender: object, **fields: Any) -> None:
        plain = {k: v for k, v in fields.items() if isinstance(v, str | int | float | None)}
        line = json.dumps({"k": kind, "t": time.time(), "pid": os.getpid(), **plain})
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")

    return write

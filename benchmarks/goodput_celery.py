"""The goodput benchmark's Celery app: rows (a) this project, (b) ``rate_limit``, (c) tenacity.

Started by the driver as ``celery -A goodput_celery worker -Q <api>,<other>`` with the
``GP_*`` environment (see ``goodput_common``). Every task takes ``(base, tenant, limit)`` and makes
one call to ``<base>/<tenant>/<task id>``.

* ``gp.ours.api`` / ``gp.ours.other``: ``RateLimitedTask`` per integration (named like its
  queue), the HTTP call through ``RateLimitedAdapter``; a 429 requeues the task.
* ``gp.rl.api`` / ``gp.rl.other``: Celery's ``rate_limit`` (set per scenario by the driver
  with ``control.rate_limit``), ``autoretry_for=(HTTPError,)`` with ``retry_backoff``.
* ``gp.tenacity``: no limiter; tenacity sleeps each 429's ``Retry-After`` inside the task.
"""

from __future__ import annotations

import json
import os
from typing import Any

import goodput_common as common
import requests
from celery import Celery, Task, signals

from queue_ratelimit import Limiter
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.integrations.celery import RateLimitedTask, configure, install

RUN = os.environ.get(common.RUN_ENV, "gp")
REDIS_URL = os.environ.get(common.REDIS_ENV, "redis://127.0.0.1:6379/0")
API, OTHER = common.queues()
RATE = float(os.environ.get(common.RATE_ENV, "40"))

app = Celery("goodput", broker=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    broker_transport_options=json.loads(os.environ.get("GP_TRANSPORT", "{}")),
    worker_hijack_root_logger=False,
)
limiter = Limiter(
    RedisBackend(REDIS_URL, prefix=RUN, idle_ttl=common.idle_ttl()),
    {n: common.ours_config(n, RATE) for n in (API, OTHER)},
)
# GP_MAX_COUNTDOWN: the longest countdown given to the broker (requeues through the broker
# park longer waits in hops); a small one stands in for hour-long waits under the default
configure(app, limiter, max_countdown=float(os.environ.get("GP_MAX_COUNTDOWN", "0")) or None)
install(app)


class _Ours(RateLimitedTask):
    """One call through this project's adapter; the tenant is the task's second argument."""

    def tenant(self, base: str, tenant: str, limit: float = 0.0) -> str | None:
        return tenant or None

    def run(self, base: str, tenant: str, limit: float = 0.0) -> None:
        common.call_ours(lambda: limiter, str(self.integration), base, tenant, str(self.request.id))


class OursApi(_Ours):
    name = "gp.ours.api"
    integration = API


class OursOther(_Ours):
    name = "gp.ours.other"
    integration = OTHER


app.register_task(OursApi())
app.register_task(OursOther())


def _celery_rate_limited(name: str) -> None:
    """Celery's own limiter: ``rate_limit`` per task type, ``autoretry_for`` on the 429."""

    @app.task(  # type: ignore[untyped-decorator]
        name=name,
        bind=True,
        rate_limit=f"{RATE:g}/s",
        autoretry_for=(requests.HTTPError,),
        retry_backoff=True,
        retry_jitter=True,
        max_retries=20,
    )
    def rate_limited(self: Task, base: str, tenant: str, limit: float = 0.0) -> None:
        common.call_plain(base, tenant, str(self.request.id))
        common.records().done(str(self.request.id))


_celery_rate_limited("gp.rl.api")
_celery_rate_limited("gp.rl.other")


@app.task(name="gp.tenacity", bind=True)  # type: ignore[untyped-decorator]
def tenacity_task(self: Task, base: str, tenant: str, limit: float = 0.0) -> None:
    """Sleep on each 429 for its ``Retry-After``, inside the task (no limiter)."""
    common.call_with_tenacity(base, tenant, str(self.request.id))
    common.records().done(str(self.request.id))


def _retried(sender: Any = None, request: Any = None, **_: Any) -> None:
    """Celery's retries; this project's requeues are counted by its own signal."""
    if request is not None and not isinstance(sender, RateLimitedTask):
        common.records().requeued(str(request.id))


def _delivered(sender: Any = None, task_id: Any = None, **_: Any) -> None:
    """Each delivery a worker begins to run: the broker hops per task, plus one."""
    common.records().delivered(str(task_id))


def _failed(sender: Any = None, task_id: Any = None, exception: Any = None, **_: Any) -> None:
    common.records().failed(str(task_id), type(exception).__name__)


if os.environ.get("GP_WORKER") == "1":  # only in worker processes, not in the driver
    signals.task_prerun.connect(_delivered, weak=False)
    signals.task_retry.connect(_retried, weak=False)
    signals.task_failure.connect(_failed, weak=False)
    common.record_our_signals()

"""The Celery app the integration tests run in real worker processes.

Everything test-specific comes from the environment, so a worker started with
``celery -A tests.integration.celery_app worker`` matches the test that started it:
QRL_BROKER, QRL_BACKEND, QRL_REDIS (limiter state), QRL_PREFIX (limiter keys and the
integration-name suffix), QRL_UPSTREAM (the hidden-limit server), QRL_SETTINGS (JSON of
extra app.conf settings); QRL_RATE, QRL_MAX_CONCURRENT, QRL_LEASE_TTL, QRL_BUDGET,
QRL_BREAKER_OPEN, QRL_MAX_WAIT and QRL_ON_BACKEND_ERROR adjust the integrations' configs.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
import requests
from celery import Celery, signals

from queue_ratelimit import IntegrationConfig, Limiter, RateLimited, requeue_after
from queue_ratelimit import signals as qrl_signals
from queue_ratelimit.backends import open_backend
from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.integrations.celery import (
    RateLimitedTask,
    configure,
    install,
    integration_router,
)
from queue_ratelimit.tasks import TICKET_HEADER, Ticket
from queue_ratelimit.testing.upstream import LOCK_TIMEOUT

PREFIX = os.environ.get("QRL_PREFIX", "qrltest")
SUFFIX = PREFIX.replace("qrltest-", "")[:12]
NOTION = f"notion{SUFFIX}"
GITHUB = f"github{SUFFIX}"
UPSTREAM = os.environ.get("QRL_UPSTREAM", "http://127.0.0.1:1")
REDIS_URL = os.environ.get("QRL_REDIS", "redis://127.0.0.1:6379/0")

_concurrent = os.environ.get("QRL_MAX_CONCURRENT")
COMMON: dict[str, Any] = dict(
    rate_limit_per_sec=float(os.environ.get("QRL_RATE", "5")),
    burst_size=1.0,
    increase_factor=0.2,
    decrease_factor=0.5,
    min_rate=float(os.environ.get("QRL_MIN_RATE", "0.5")),
    max_rate=max(50.0, float(os.environ.get("QRL_RATE", "5"))),
    max_concurrent=int(_concurrent) if _concurrent else None,
    lease_ttl=float(os.environ.get("QRL_LEASE_TTL", "300")),
    max_wait=float(os.environ.get("QRL_MAX_WAIT", "1.0")),
    max_backoff=120.0,
    requeue_budget=int(os.environ.get("QRL_BUDGET", "200")),
    breaker_failure_threshold=5,
    breaker_open_seconds=float(os.environ.get("QRL_BREAKER_OPEN", "8")),
    on_backend_error=os.environ.get("QRL_ON_BACKEND_ERROR", "closed"),
    fallback_processes=2,
    dialect={"contention_codes": [LOCK_TIMEOUT]},  # what the upstream's busy() answers
)
CONFIGS = {
    NOTION: IntegrationConfig(name=NOTION, **COMMON),
    GITHUB: IntegrationConfig(name=GITHUB, **COMMON),
}

app = Celery(
    "qrl_tests", broker=os.environ.get("QRL_BROKER"), backend=os.environ.get("QRL_BACKEND")
)
app.conf.update(
    {
        "task_routes": (integration_router,),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "result_expires": 600,
        "queue_ratelimit_poll": 0.5,
        **json.loads(os.environ.get("QRL_SETTINGS", "{}")),
    }
)
limiter = Limiter(open_backend(REDIS_URL, prefix=PREFIX), CONFIGS, probe_interval=0.5)
configure(app, limiter)
install(app)

_session = requests.Session()
for name in CONFIGS:
    _session.mount(f"{UPSTREAM}/{name}/", RateLimitedAdapter(limiter, name, tenant=None))
# the tests' records go to the result backend's Redis: the limiter's may be taken down
_waits = redis.Redis.from_url(os.environ.get("QRL_BACKEND") or REDIS_URL)


def _call(integration: str, task_id: str) -> None:
    _session.get(f"{UPSTREAM}/{integration}/{task_id}").raise_for_status()


class SyncNotion(RateLimitedTask):
    """The class form: one upstream call per task."""

    name = "tests.sync_notion"
    integration = NOTION

    def run(self, page: int) -> dict[str, Any]:
        _call(NOTION, self.request.id)
        return {"retries": self.request.retries, "page": page}


sync_notion = app.register_task(SyncNotion())


@app.task(
    base=RateLimitedTask,
    integration=GITHUB,
    bind=True,
    name="tests.sync_repo",
    autoretry_for=(Exception,),
    max_retries=2,
    shared=False,
)
def sync_repo(self: RateLimitedTask, repo: int) -> dict[str, Any]:
    """The decorator form, with autoretry_for that must never see a rate limit."""
    _call(GITHUB, self.request.id)
    return {"retries": self.request.retries, "repo": repo}


@app.task(
    base=RateLimitedTask, integration=NOTION, bind=True, name="tests.swallowing", shared=False
)
def swallowing(self: RateLimitedTask) -> str:
    """A body that swallows every Exception: it must not swallow a requeue."""
    try:
        _call(NOTION, self.request.id)
    except Exception:
        return "swallowed"
    return "ok"


@app.task(
    base=RateLimitedTask,
    integration=NOTION,
    bind=True,
    name="tests.per_tenant",
    tenant=lambda workspace, page: workspace,
    shared=False,
)
def per_tenant(self: RateLimitedTask, workspace: str, page: int) -> dict[str, Any]:
    """A limit per workspace (a key per tenant)."""
    _call(NOTION, self.request.id)
    return {"workspace": workspace, "page": page}


@app.task(base=RateLimitedTask, integration=NOTION, bind=True, name="tests.slow", shared=False)
def slow(self: RateLimitedTask, seconds: float) -> str:
    """Calls the upstream, then works a while: long enough to be killed mid-task."""
    _call(NOTION, self.request.id)
    _waits.sadd(f"{PREFIX}:pids", os.getpid())
    time.sleep(seconds)
    return str(self.request.id)


@app.task(base=RateLimitedTask, integration=NOTION, bind=True, name="tests.counted", shared=False)
def counted(self: RateLimitedTask, n: int) -> dict[str, Any]:
    """Records each finished body with the copy it ran as and whether the broker had
    delivered that message before: the kill tests tell a requeue's duplicate (two copies)
    from Celery's own at-least-once (one copy delivered again after its body finished)."""
    _call(NOTION, self.request.id)
    copy = Ticket.loads(getattr(self.request, TICKET_HEADER, None)).copy
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    _waits.rpush(f"{PREFIX}:bodies", json.dumps([self.request.id, copy, redelivered]))
    return {"retries": self.request.retries, "n": n}


def _record_delivery(sender: Any = None, task: Any = None, **_: Any) -> None:
    """Each delivery of a ``tests.counted`` task that begins to run (before the limiter's
    checks), with its copy token and whether the broker had delivered it before."""
    if getattr(task, "name", None) != "tests.counted":
        return
    request = task.request
    copy = Ticket.loads(getattr(request, TICKET_HEADER, None)).copy
    redelivered = bool((request.delivery_info or {}).get("redelivered"))
    _waits.rpush(f"{PREFIX}:deliveries", json.dumps([request.id, copy, redelivered]))


@signals.worker_process_init.connect
def _reset_connections(**_: Any) -> None:  # prefork children get fresh sockets
    _waits.connection_pool.reset()


def _record_event(sender: object, **fields: Any) -> None:
    """Requeue reasons and backend outages, for the fault tests."""
    what = fields.get("reason") or fields.get("mode") or "recovered"
    _waits.rpush(f"{PREFIX}:events", what)


if os.environ.get("QRL_WORKER") == "1":  # not in the test process that imports this module
    for _signal in (
        qrl_signals.task_requeued,
        qrl_signals.backend_unavailable,
        qrl_signals.backend_recovered,
    ):
        _signal.connect(_record_event)

if os.environ.get("QRL_METRICS") == "1":  # prometheus multiprocess mode: see test_metrics
    from queue_ratelimit.metrics import EventMetrics

    EventMetrics().connect()


def _record_failure(sender: Any = None, task_id: str = "", exception: Any = None, **_: Any) -> None:
    """Failures as the framework reports them, for the tests to find."""
    _waits.rpush(f"{PREFIX}:failures", f"{task_id} {type(exception).__name__}")


def _record_retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    """Celery's task_retry, and whether its reason says it is a requeue (docs/celery.md)."""
    requeue = isinstance(getattr(reason, "exc", None), RateLimited)
    _waits.rpush(f"{PREFIX}:retries", f"{getattr(request, 'id', '')} {int(requeue)}")


if os.environ.get("QRL_WORKER") == "1":
    signals.task_failure.connect(_record_failure)
    signals.task_retry.connect(_record_retry)
    signals.task_prerun.connect(_record_delivery)


# -- for the shared scenarios (rigs.py, test_scenarios.py) -----------------------------------


@app.task(
    base=RateLimitedTask,
    integration=NOTION,
    bind=True,
    name="tests.throttled",
    requeue_budget=3,
    shared=False,
)
def throttled(self: RateLimitedTask) -> None:
    """Always meets a backoff it reports itself, with a requeue budget of its own (3); counts
    its runs."""
    _waits.incr(f"{PREFIX}:runs:{self.request.id}")
    raise requeue_after(retry_after=0.2, report=False)


@app.task(base=RateLimitedTask, integration=NOTION, bind=True, name="tests.held", shared=False)
def held(self: RateLimitedTask) -> str:
    """Calls the upstream, then holds until the test releases it (a kill lands mid-task)."""
    from tests.support import hold

    _call(NOTION, self.request.id)
    hold(_waits, PREFIX, self.request.id)
    return str(self.request.id)


if os.environ.get("QRL_WORKER") == "1":
    from tests.support import record_events

    record_events(lambda: _waits, PREFIX)

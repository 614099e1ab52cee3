"""The RQ jobs the integration tests run on real workers (importable by work horses).

Everything test-specific comes from the environment the harness gives the worker:
QRL_PREFIX (the integration-name suffix and the Redis key for records), QRL_UPSTREAM (the
hidden-limit server), and the QUEUE_RATELIMIT_* settings the worker itself reads, so the
jobs' HTTP clients share the worker's limiter configuration (``limiter_for``).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import redis
import requests
from rq import get_current_job

from queue_ratelimit import RateLimited
from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.integrations.rq import limiter_for, rate_limited
from queue_ratelimit.testing.upstream import LOCK_TIMEOUT

PREFIX = os.environ.get("QRL_PREFIX", "qrltest")
SUFFIX = PREFIX.replace("qrltest-", "")[:12]
NOTION = f"notion{SUFFIX}"
GITHUB = f"github{SUFFIX}"

COMMON: dict[str, Any] = dict(
    rate_limit_per_sec=5.0,
    burst_size=1.0,
    increase_factor=0.2,
    decrease_factor=0.5,
    min_rate=0.5,
    max_rate=50.0,
    max_wait=1.0,
    max_backoff=120.0,
    requeue_budget=200,
    breaker_failure_threshold=5,
    breaker_open_seconds=5.0,
    dialect={"contention_codes": [LOCK_TIMEOUT]},  # what the upstream's busy() answers
)
SHARED = f"shared{SUFFIX}"
ALONE = f"alone{SUFFIX}"  # the same limits, beside it: the quiet tenants without a backlog
TENANT_RATE, APP_RATE = 5.0, 20.0
FAIR: dict[str, Any] = dict(  # each tenant 5/s, all of them together 20/s (fair share)
    rate_limit_per_sec=TENANT_RATE,
    burst_size=1.0,
    increase_factor=0.0,
    min_rate=TENANT_RATE,
    max_rate=TENANT_RATE,
    slow_start=False,
    max_wait=1.0,
    requeue_budget=1000,
    app_limit={
        "rate_limit_per_sec": APP_RATE,
        "burst_size": 1.0,
        "min_rate": APP_RATE,
        "max_rate": APP_RATE,
    },
)
CONFIGS = {NOTION: COMMON, GITHUB: COMMON, SHARED: FAIR, ALONE: FAIR}
"""The override file the harness writes for QUEUE_RATELIMIT_CONFIG."""


@functools.cache
def _session() -> requests.Session:
    limiter = limiter_for()
    upstream = os.environ["QRL_UPSTREAM"]
    session = requests.Session()
    for name in CONFIGS:
        session.mount(f"{upstream}/{name}/", RateLimitedAdapter(limiter, name))
    return session


@functools.cache
def _records() -> redis.Redis:
    return redis.Redis.from_url(os.environ["QUEUE_RATELIMIT_REDIS_URL"])


def _call(integration: str) -> str:
    job = get_current_job()
    assert job is not None
    upstream = os.environ["QRL_UPSTREAM"]
    _session().get(f"{upstream}/{integration}/{job.id}").raise_for_status()
    return job.id


@rate_limited(NOTION)
def sync_notion(page: int) -> dict[str, Any]:
    """One upstream call per job."""
    return {"page": page, "id": _call(NOTION)}


@rate_limited(GITHUB, tenant=lambda installation, repo: installation)
def sync_repo(installation: str, repo: int) -> dict[str, Any]:
    """A per-tenant limit; the client (built without a tenant) takes the job's."""
    return {"repo": repo, "id": _call(GITHUB)}


@rate_limited(SHARED, tenant=lambda tenant, n: tenant)
def sync_tenant(tenant: str, n: int) -> str:
    """One call to the fair-shared integration, for ``tenant``."""
    return _call(SHARED)


@rate_limited(ALONE, tenant=lambda tenant, n: tenant)
def sync_tenant_alone(tenant: str, n: int) -> str:
    """The same, on an integration of its own (the fleet test's baseline)."""
    return _call(ALONE)


@rate_limited(NOTION, requeue_budget=3)
def always_throttled() -> None:
    """Meets a backoff every time it runs (raised directly, not by an HTTP client); counts
    its runs."""
    job = get_current_job()
    assert job is not None
    _records().incr(f"{PREFIX}:runs:{job.id}")
    raise RateLimited(0.2, NOTION)


if os.environ.get("QRL_WORKER") == "1":  # not in the test process that imports this module
    from tests.support import record_events

    record_events(_records, PREFIX)

if os.environ.get("QRL_METRICS") == "1":  # prometheus multiprocess mode: see test_metrics
    from queue_ratelimit.metrics import EventMetrics

    EventMetrics().connect()


# -- for the shared scenarios (rigs.py, test_scenarios.py) -----------------------------------


@rate_limited(NOTION)
def held() -> str:
    """Calls the upstream, then holds until the test releases it (a kill lands mid-task)."""
    from tests.support import hold

    job_id = _call(NOTION)
    hold(_records(), PREFIX, job_id)
    return job_id

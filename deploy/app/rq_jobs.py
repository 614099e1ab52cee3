"""The stack's RQ jobs, paced by ``RateLimitedWorker``:
``rq worker -w queue_ratelimit.integrations.rq.RateLimitedWorker --with-scheduler crm helpdesk``.

Enqueue each job on the queue named like its integration (``enqueue`` does). The HTTP
client is built with ``limiter_for()``, so it shares the worker's settings
(``QUEUE_RATELIMIT_REDIS_URL``, ``QUEUE_RATELIMIT_PREFIX``, ``QUEUE_RATELIMIT_CONFIG``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import redis
import requests
from rq import Queue, get_current_job
from rq.job import Job

from deploy.app.settings import Settings, call_upstream, upstream_session
from queue_ratelimit.integrations.rq import limiter_for, rate_limited

settings = Settings.from_env()
RESULT_TTL = 60  # seconds a finished job stays in Redis: a steady load must not pile up


@functools.cache
def _session() -> requests.Session:
    """Built on first use in each work horse (a fresh process per job)."""
    return upstream_session(limiter_for(), settings.upstream_url)


def _job_id() -> str:
    job = get_current_job()
    if job is None:  # called directly, outside a worker
        raise RuntimeError("not running in an RQ worker")
    return job.id


@rate_limited("crm")
def sync_contact(contact: int) -> None:
    """One call to the crm bucket."""
    call_upstream(_session(), settings.upstream_url, "crm", _job_id())


@rate_limited("helpdesk")
def sync_ticket(ticket: int) -> None:
    """One call to the helpdesk bucket."""
    call_upstream(_session(), settings.upstream_url, "helpdesk", _job_id())


def enqueue(connection: redis.Redis, job: Callable[..., Any], integration: str, *args: Any) -> Job:
    """Put ``job`` on the queue named like its integration."""
    queue = Queue(integration, connection=connection)
    return queue.enqueue(job, *args, result_ttl=RESULT_TTL)

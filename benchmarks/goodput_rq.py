"""The goodput benchmark's RQ jobs: rows (e) tenacity, ``RateLimit(concurrency=...)``, (f) ours.

Run by ``rq worker`` processes the driver starts with the ``GP_*`` environment (see
``goodput_common``) and this project's ``QUEUE_RATELIMIT_*`` settings. Every job takes
``(base, tenant, limit)`` and makes one call to ``<base>/<tenant>/<job id>``; the driver
enqueues them by name (``goodput_rq.ours_api``), so only the worker imports this module.

* ``ours_api`` / ``ours_other``: ``@rate_limited`` for the integration named like the
  queue, run by ``RateLimitedSimpleWorker``; the call through ``RateLimitedAdapter``.
* ``tenacity_job``: a plain call, tenacity sleeping each 429's ``Retry-After`` in the job;
  enqueued with or without RQ's ``RateLimit(key, concurrency=...)``.
"""

from __future__ import annotations

import os

import goodput_common as common
from rq import get_current_job
from rq.job import Job

from queue_ratelimit.integrations.rq import limiter_for, rate_limited

API, OTHER = common.queues()


def _job_id() -> str:
    job = get_current_job()
    if job is None:
        raise RuntimeError("not inside an RQ job")
    return str(job.id)


def _ours(integration: str, base: str, tenant: str) -> None:
    common.call_ours(limiter_for, integration, base, tenant, _job_id())


def _tenant(base: str, tenant: str, limit: float) -> str | None:
    return tenant or None


@rate_limited(API, tenant=_tenant)
def ours_api(base: str, tenant: str, limit: float) -> None:
    _ours(API, base, tenant)


@rate_limited(OTHER, tenant=_tenant)
def ours_other(base: str, tenant: str, limit: float) -> None:
    _ours(OTHER, base, tenant)


def tenacity_job(base: str, tenant: str, limit: float) -> None:
    """Sleep on each 429 for its ``Retry-After``, inside the job."""
    task_id = _job_id()
    common.call_with_tenacity(base, tenant, task_id)
    common.records().done(task_id)


def record_failure(job: Job, exc_type: type[BaseException], *_: object) -> bool:
    """The workers' exception handler (``--exception-handler``): a visible failure."""
    common.records().failed(str(job.id), exc_type.__name__)
    return True  # RQ's own handling goes on


if os.environ.get("GP_WORKER") == "1":
    common.record_our_signals()

"""The stack's Celery app: ``celery -A deploy.app.celery_app worker -Q crm,helpdesk``.

One ``RateLimitedTask`` per integration, routed to the queue named like it
(``integration_router``); ``install`` adds the bootstep that pauses a queue while its
integration's breaker is open. Settings: ``deploy.app.settings`` (``CELERY_BROKER_URL``,
``QUEUE_RATELIMIT_REDIS_URL``, ``UPSTREAM_URL``, ...). No result backend: the producer
fires and forgets. The tasks belong to this app only (``shared=False``).
"""

from __future__ import annotations

import functools

import requests
from celery import Celery

from deploy.app.settings import Settings, call_upstream, start_observing, upstream_session
from queue_ratelimit.integrations.celery import (
    RateLimitedTask,
    install,
    integration_router,
    limiter_for,
)

settings = Settings.from_env()

app = Celery("qrl_compose", broker=settings.celery_broker_url)
app.conf.update(
    queue_ratelimit_redis_url=settings.limiter_redis_url,
    queue_ratelimit_prefix=settings.limiter_prefix,
    task_routes=(integration_router,),  # queue "crm" for crm tasks, ...
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
install(app)
start_observing()


@functools.cache
def _session() -> requests.Session:
    """Built on first use, in the process that runs tasks (a prefork child)."""
    return upstream_session(limiter_for(app), settings.upstream_url)


@app.task(  # type: ignore[untyped-decorator]
    base=RateLimitedTask, integration="crm", bind=True, name="compose.sync_contact", shared=False
)
def sync_contact(self: RateLimitedTask, contact: int) -> None:
    """One call to the crm bucket."""
    call_upstream(_session(), settings.upstream_url, "crm", self.request.id)


@app.task(  # type: ignore[untyped-decorator]
    base=RateLimitedTask,
    integration="helpdesk",
    bind=True,
    name="compose.sync_ticket",
    shared=False,
)
def sync_ticket(self: RateLimitedTask, ticket: int) -> None:
    """One call to the helpdesk bucket."""
    call_upstream(_session(), settings.upstream_url, "helpdesk", self.request.id)

"""What the compose stack's apps share: settings from the environment, the upstream client.

Each worker module reads its settings once, when its framework imports it (``celery -A``,
``dramatiq``, RQ's work horse); nothing here connects to anything. Defaults suit a laptop
(everything on 127.0.0.1); docker-compose.yml sets every variable for the stack.

==============================  =================================  ==========================
variable                        default                            what
==============================  =================================  ==========================
``UPSTREAM_URL``                ``http://127.0.0.1:8080``          the rate-limited API
``QUEUE_RATELIMIT_REDIS_URL``   ``redis://127.0.0.1:6379/1``       the shared limiter state
``QUEUE_RATELIMIT_PREFIX``      ``qrl``                            the limiter's key prefix
``CELERY_BROKER_URL``           ``redis://127.0.0.1:6379/0``       Celery's broker
``DRAMATIQ_BROKER_URL``         ``redis://127.0.0.1:6379/0``       Dramatiq's (redis/amqp)
``DRAMATIQ_NAMESPACE``          ``dramatiq``                       its Redis broker's keys
``RQ_REDIS_URL``                ``redis://127.0.0.1:6379/0``       RQ's Redis (the CLI's too)
==============================  =================================  ==========================

``QUEUE_RATELIMIT_CONFIG`` (the integrations, ``deploy/queue-ratelimit.toml`` in the stack)
is read by ``queue_ratelimit.registry.load_configs`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import requests

from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.limiter import Limiter

__all__ = ["INTEGRATIONS", "Settings", "call_upstream", "start_observing", "upstream_session"]

INTEGRATIONS = ("crm", "helpdesk")
"""The stack's integrations (deploy/queue-ratelimit.toml): each has a queue named like it,
in every framework, and a bucket of its own on the upstream (``/<integration>/<call-id>``)."""


@dataclass(frozen=True)
class Settings:
    """The environment the stack's apps run in (see the module docstring)."""

    upstream_url: str
    limiter_redis_url: str
    limiter_prefix: str
    celery_broker_url: str
    dramatiq_broker_url: str
    dramatiq_namespace: str
    rq_redis_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``), at call time."""
        env = os.environ if environ is None else environ
        local_redis = "redis://127.0.0.1:6379"
        return cls(
            upstream_url=env.get("UPSTREAM_URL", "http://127.0.0.1:8080").rstrip("/"),
            limiter_redis_url=env.get("QUEUE_RATELIMIT_REDIS_URL", f"{local_redis}/1"),
            limiter_prefix=env.get("QUEUE_RATELIMIT_PREFIX") or "qrl",
            celery_broker_url=env.get("CELERY_BROKER_URL", f"{local_redis}/0"),
            dramatiq_broker_url=env.get("DRAMATIQ_BROKER_URL", f"{local_redis}/0"),
            dramatiq_namespace=env.get("DRAMATIQ_NAMESPACE") or "dramatiq",
            rq_redis_url=env.get("RQ_REDIS_URL", f"{local_redis}/0"),
        )


def upstream_session(limiter: Limiter, upstream_url: str) -> requests.Session:
    """A session whose calls to each integration's bucket go through its limiter.

    Inside a task, the first call uses the slot the task acquired before its body; a 429
    sends the task back to its broker for ``Retry-After`` (the adapter hands it over).
    """
    session = requests.Session()
    for integration in INTEGRATIONS:
        adapter = RateLimitedAdapter(limiter, integration)
        session.mount(f"{upstream_url}/{integration}/", adapter)
    return session


def call_upstream(
    session: requests.Session, upstream_url: str, integration: str, call_id: str
) -> None:
    """One call to ``integration``'s bucket; an error answer (other than 429) raises."""
    response = session.get(f"{upstream_url}/{integration}/{call_id}", timeout=10)
    response.raise_for_status()


def start_observing(environ: Mapping[str, str] | None = None) -> None:
    """Log the limiter's decisions and, when ``PROMETHEUS_MULTIPROC_DIR`` is set, count them
    for the exporter (docs/metrics.md). Called once by each worker module."""
    from queue_ratelimit.logs import install_logging

    install_logging()
    env = os.environ if environ is None else environ
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        from queue_ratelimit.metrics import EventMetrics

        EventMetrics().connect()

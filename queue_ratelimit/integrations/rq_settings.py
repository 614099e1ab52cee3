"""RQ: what a job declares (``rate_limited``) and how a worker finds its limiter.

Read by ``queue_ratelimit.integrations.rq``; see its docstring and docs/rq.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from rq.job import Job

from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.errors import ConfigError
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import Cost
from queue_ratelimit.registry import load_configs

__all__ = ["JobLimits", "limiter_from_env", "limits_of", "rate_limited"]

REDIS_URL_ENV = "QUEUE_RATELIMIT_REDIS_URL"
PREFIX_ENV = "QUEUE_RATELIMIT_PREFIX"
MAX_COUNTDOWN_ENV = "QUEUE_RATELIMIT_MAX_COUNTDOWN"
POLL_ENV = "QUEUE_RATELIMIT_POLL"
PAUSED_FIELD = "queue_ratelimit_paused"
"""The field of the worker's Redis hash listing the queues it leaves alone (breaker open)."""

_MARK = "__queue_ratelimit__"
F = TypeVar("F", bound=Callable[..., Any])
Tenant = str | Callable[..., str | None] | None


@dataclass(frozen=True)
class JobLimits:
    """What ``rate_limited`` marks a job function with (read by the worker from ``job.func``).

    Attributes:
        integration: the integration whose limits apply.
        tenant: a tenant name, or a function of the job's arguments giving one (None: one
            limit for every job of the integration).
        requeue_budget: requeues allowed before ``RequeueBudgetExhausted`` (default: the
            integration's ``requeue_budget``).
        max_wait: the longest wait slept in the worker (default: the integration's).
        cost: what a run spends: a number of requests, ``{limit: units}``, or a function of
            the job's arguments giving one (the limiter checks it when the job runs).
    """

    integration: str
    tenant: Tenant = None
    requeue_budget: int | None = None
    max_wait: float | None = None
    cost: Cost | Callable[..., Cost] = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.integration, str) or not self.integration:
            raise ConfigError(None, "integration", self.integration, "must be a non-empty string")
        budget = self.requeue_budget
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
            raise ConfigError(self.integration, "requeue_budget", budget, "must be an int")
        if budget is not None and budget < 0:
            raise ConfigError(self.integration, "requeue_budget", budget, "must be >= 0")
        wait = self.max_wait
        if wait is not None and (not isinstance(wait, int | float) or not wait >= 0):
            raise ConfigError(self.integration, "max_wait", wait, "must be a number >= 0")

    def tenant_for(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        """The tenant key of a job with these arguments."""
        return self.tenant(*args, **kwargs) if callable(self.tenant) else self.tenant

    def cost_for(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Cost:
        """What a job with these arguments spends."""
        return self.cost(*args, **kwargs) if callable(self.cost) else self.cost


def rate_limited(
    integration: str,
    tenant: Tenant = None,
    requeue_budget: int | None = None,
    max_wait: float | None = None,
    cost: Cost | Callable[..., Cost] = 1.0,
) -> Callable[[F], F]:
    """Mark a job function as calling ``integration``; a ``RateLimitedWorker`` paces it.

    The function itself is returned unchanged (called directly, or by a plain RQ worker, it
    simply runs). See ``JobLimits`` for the arguments.

    Raises:
        ConfigError: an argument is invalid (at decoration time).
    """
    limits = JobLimits(integration, tenant, requeue_budget, max_wait, cost)

    def mark(func: F) -> F:
        setattr(func, _MARK, limits)
        return func

    return mark


def limits_of(job: Job) -> JobLimits | None:
    """The limits a job's function was marked with; None when unmarked or unloadable."""
    try:
        func = job.func
    except Exception:  # RQ reports an unimportable function when the job runs
        return None
    limits = getattr(func, _MARK, None)
    return limits if isinstance(limits, JobLimits) else None


def limiter_from_env(
    environ: Mapping[str, str] | None = None, *, connection: redis.Redis | None = None
) -> Limiter:
    """The limiter the worker builds from its environment (see the module docstring).

    Job modules call it too, so their HTTP clients share the worker's configuration.
    Without ``QUEUE_RATELIMIT_REDIS_URL`` the limiter uses ``connection`` (the worker's
    Redis), through a client of its own that fails fast.

    Raises:
        ConfigError: a setting is invalid, or there is neither a URL nor a connection.
    """
    env = os.environ if environ is None else environ
    configs = load_configs(environ=env)
    url = env.get(REDIS_URL_ENV)
    if url:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(None, REDIS_URL_ENV, url, "must be a redis:// URL")
        client: redis.Redis | str = url
    elif connection is not None:
        client = _fail_fast_client(connection)
    else:
        raise ConfigError(None, REDIS_URL_ENV, url, "is required outside an RQ worker")
    prefix = env.get(PREFIX_ENV) or "qrl"
    try:
        return Limiter(RedisBackend(client, prefix=prefix), configs)
    except ConfigError as exc:
        if exc.field != "prefix":
            raise
        raise ConfigError(None, PREFIX_ENV, prefix, exc.reason) from None


def _fail_fast_client(connection: redis.Redis) -> redis.Redis:
    """A client to the worker's Redis whose calls give up within seconds (RQ's own
    connection waits minutes, for its blocking dequeue)."""
    pool = connection.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": 2.0, "socket_connect_timeout": 1.0}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


def env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(None, name, raw, "must be a number of seconds > 0")
    return value

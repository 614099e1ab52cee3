"""RQ: what a job declares (``rate_limited``) and how a worker finds its limiter.

Read by ``queue_ratelimit.integrations.rq``; see its docstring and docs/rq.md.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis
from rq.job import Job

from queue_ratelimit.backends import open_backend
from queue_ratelimit.backends.base import REMEMBER_FOR, Backend
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.backends.redis_connect import fail_fast_copy
from queue_ratelimit.errors import ConfigError
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.logs import log_start
from queue_ratelimit.plans import Cost
from queue_ratelimit.registry import config_sources, load_configs
from queue_ratelimit.runner import TaskLimits, Tenant
from queue_ratelimit.tasks import TaskGate

__all__ = [
    "announce",
    "check_jobs",
    "limiter_for",
    "limiter_from_env",
    "limits_of",
    "rate_limited",
    "worker_gate",
]

REDIS_URL_ENV = "QUEUE_RATELIMIT_REDIS_URL"
PREFIX_ENV = "QUEUE_RATELIMIT_PREFIX"
MAX_COUNTDOWN_ENV = "QUEUE_RATELIMIT_MAX_COUNTDOWN"
POLL_ENV = "QUEUE_RATELIMIT_POLL"
IDLE_TTL_ENV = "QUEUE_RATELIMIT_IDLE_TTL"
REMEMBER_FOR_ENV = "QUEUE_RATELIMIT_REMEMBER_FOR"
PAUSED_FIELD = "queue_ratelimit_paused"
"""The field of the worker's Redis hash listing the queues it leaves alone (breaker open)."""

_MARK = "__queue_ratelimit__"
F = TypeVar("F", bound=Callable[..., Any])


def rate_limited(
    integration: str,
    tenant: Tenant = None,
    requeue_budget: int | None = None,
    max_wait: float | None = None,
    cost: Cost | Callable[..., Cost] = 1.0,
) -> Callable[[F], F]:
    """Mark a job function as calling ``integration``; a ``RateLimitedWorker`` paces it.

    The function itself is returned unchanged (called directly, or by a plain RQ worker, it
    simply runs). See ``queue_ratelimit.runner.TaskLimits`` for the arguments.

    Raises:
        ConfigError: an argument is invalid (at decoration time).
    """
    limits = TaskLimits(integration, tenant, cost, requeue_budget, max_wait)

    def mark(func: F) -> F:
        setattr(func, _MARK, limits)
        name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}"
        _DECLARED[name] = limits
        return func

    return mark


_DECLARED: dict[str, TaskLimits] = {}
"""Every ``rate_limited`` job function imported in this process, by its dotted name."""


def check_jobs(limiter: Limiter) -> None:
    """Check the limits of every ``rate_limited`` job function imported so far (a worker's
    start: the job modules its settings module or script imports).

    Raises:
        ConfigError: naming the job and the field (``integration`` with a suggestion, ...).
    """
    for name, limits in sorted(_DECLARED.items()):
        limits.check(limiter, f"job {name}")


def limits_of(job: Job) -> TaskLimits | None:
    """The limits a job's function was marked with; None when unmarked or unloadable."""
    try:
        func = job.func
    except Exception:  # RQ reports an unimportable function when the job runs
        return None
    limits = getattr(func, _MARK, None)
    return limits if isinstance(limits, TaskLimits) else None


def limiter_for(
    environ: Mapping[str, str] | None = None, *, connection: redis.Redis | None = None
) -> Limiter:
    """The limiter an RQ worker builds from its environment (``QUEUE_RATELIMIT_REDIS_URL``,
    ``_PREFIX``, ``_CONFIG``, ``_IDLE_TTL`` and ``_REMEMBER_FOR`` in seconds).

    Job modules call it too, so their HTTP clients share the worker's configuration. The
    URL may name another store (``postgresql://...``, ``sqlite:///path``). Without
    ``QUEUE_RATELIMIT_REDIS_URL`` the limiter uses ``connection`` (the worker's Redis),
    through a client of its own that fails fast.

    Raises:
        ConfigError: a setting is invalid, or there is neither a URL nor a connection.
    """
    env = os.environ if environ is None else environ
    configs = load_configs(environ=env)
    url = env.get(REDIS_URL_ENV)
    prefix = env.get(PREFIX_ENV) or "qrl"
    idle_ttl = env_seconds(env, IDLE_TTL_ENV, 3600.0)
    remember_for = env_seconds(env, REMEMBER_FOR_ENV, REMEMBER_FOR, zero=True)
    try:
        backend: Backend
        if url:  # (any store's URL: Redis, PostgreSQL, SQLite)
            backend = open_backend(
                url,
                prefix=prefix,
                field=REDIS_URL_ENV,
                idle_ttl=idle_ttl,
                remember_for=remember_for,
            )
        elif connection is not None:
            backend = RedisBackend(
                fail_fast_copy(connection),
                prefix=prefix,
                idle_ttl=idle_ttl,
                remember_for=remember_for,
            )
        else:
            raise ConfigError(None, REDIS_URL_ENV, url, "is required outside an RQ worker")
        return Limiter(backend, configs)
    except ConfigError as exc:
        names = {
            "prefix": PREFIX_ENV,
            "idle_ttl": IDLE_TTL_ENV,
            "remember_for": REMEMBER_FOR_ENV,
            "conninfo": REDIS_URL_ENV,  # (another store's URL)
            "path": REDIS_URL_ENV,
        }
        if exc.field not in names:
            raise
        raise ConfigError(None, names[exc.field], exc.value, exc.reason) from None


def limiter_from_env(
    environ: Mapping[str, str] | None = None, *, connection: redis.Redis | None = None
) -> Limiter:
    """Deprecated: ``limiter_for``."""
    warnings.warn(
        "limiter_from_env() is deprecated: use queue_ratelimit.integrations.rq.limiter_for()",
        DeprecationWarning,
        stacklevel=2,
    )
    return limiter_for(environ, connection=connection)


def env_seconds(env: Mapping[str, str], name: str, default: float, *, zero: bool = False) -> float:
    """A setting in seconds (> 0, or >= 0 with ``zero``), ``default`` when unset."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ConfigError(None, name, raw, f"must be a number of seconds {'>=' if zero else '>'} 0")
    return value


def worker_gate(
    limiter: Limiter | None,
    connection: redis.Redis,
    max_countdown: float | None,
    poll: float | None,
    *,
    forking: bool,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> tuple[TaskGate, float]:
    """A worker's gate and breaker poll interval: from its class or constructor, else from
    the environment (``limiter_for``, ``QUEUE_RATELIMIT_MAX_COUNTDOWN``, ``_POLL``).

    Raises:
        ConfigError: a setting is invalid, or a forking worker is given a local fallback
            (``on_backend_error = "open"``) it could not keep between jobs.
    """
    env = os.environ
    if limiter is None:
        limiter = limiter_for(env, connection=connection)
    countdown = max_countdown or env_seconds(env, MAX_COUNTDOWN_ENV, 600.0)
    if forking:
        _refuse_local_fallback(limiter)
    gate = TaskGate(limiter, max_countdown=countdown, logger=logger)
    return gate, poll or env_seconds(env, POLL_ENV, 1.0)


def announce(
    logger: logging.Logger | logging.LoggerAdapter[Any],
    limiter: Limiter,
    queues: list[str],
    given: bool,
) -> None:
    """The worker's one line at start: its Redis, config and the integrations it gates
    (its queues named like one)."""
    source = "given in code" if given else config_sources()
    gated = [name for name in queues if name in limiter.configs]
    log_start(logger, limiter.backend.describe(), source, gated)


def _refuse_local_fallback(limiter: Limiter) -> None:
    """A forking worker starts each job in a fresh process: a local fallback limiter there
    would start full for every job, i.e. limit nothing."""
    for config in limiter.configs.values():
        if config.on_backend_error == "open":
            raise ConfigError(
                config.name,
                "on_backend_error",
                "open",
                "RQ's forking worker keeps no local state between jobs: use "
                "RateLimitedSimpleWorker for a local fallback, or 'closed'",
            )


def _job_limits(
    integration: str,
    tenant: Tenant = None,
    requeue_budget: int | None = None,
    max_wait: float | None = None,
    cost: Cost | Callable[..., Cost] = 1.0,
) -> TaskLimits:
    """The old ``JobLimits(integration, tenant, requeue_budget, max_wait, cost)``, argument
    order kept: a ``TaskLimits``."""
    return TaskLimits(integration, tenant, cost, requeue_budget, max_wait)


def __getattr__(name: str) -> Any:
    if name == "JobLimits":  # the old name, kept for one release
        warnings.warn(
            "JobLimits is deprecated: use queue_ratelimit.TaskLimits (integration, tenant, "
            "cost, requeue_budget, max_wait)",
            DeprecationWarning,
            stacklevel=2,
        )
        return _job_limits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

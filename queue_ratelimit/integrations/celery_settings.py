"""Celery: an app's limiter and gate, built once from its ``queue_ratelimit_*`` settings.

Settings (``app.conf``): ``queue_ratelimit_redis_url`` (shared state; without it, an
in-process memory backend), ``queue_ratelimit_prefix`` (default ``qrl``),
``queue_ratelimit_config`` (a TOML or JSON file of integration overrides),
``queue_ratelimit_max_countdown`` (longest countdown handed to the broker; default 600 s, or
half the Redis broker's ``visibility_timeout`` when smaller), ``queue_ratelimit_poll``
(seconds between the breaker checks of ``install``'s bootstep, default 1),
``queue_ratelimit_promote_interval`` and ``queue_ratelimit_ticket_keep`` (``celery_due``),
``queue_ratelimit_track_published`` and ``queue_ratelimit_lost_after`` (``celery_published``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery

from queue_ratelimit.backends import open_backend
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.errors import ConfigError
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.registry import load_configs
from queue_ratelimit.tasks import TaskGate

__all__ = ["configure", "gate_for", "limiter_for"]

_GATE_ATTR = "_queue_ratelimit_gate"
_URL = "queue_ratelimit_redis_url"


def configure(app: Celery, limiter: Limiter | None = None, **options: Any) -> TaskGate:
    """Give ``app`` its limiter (built from ``app.conf`` when omitted) and return its gate.

    Raises:
        ConfigError: a ``queue_ratelimit_*`` setting is invalid (named in the error).
    """
    conf = app.conf
    if limiter is None:
        limiter = _limiter_from_conf(conf)
    max_countdown = options.pop("max_countdown", None) or conf.get("queue_ratelimit_max_countdown")
    if max_countdown is None:
        max_countdown = _default_max_countdown(conf)
    if not isinstance(max_countdown, int | float) or max_countdown <= 0:
        raise ConfigError(None, "queue_ratelimit_max_countdown", max_countdown, "must be > 0")
    gate = TaskGate(limiter, max_countdown=float(max_countdown), **options)
    setattr(app, _GATE_ATTR, gate)
    return gate


def gate_for(app: Celery) -> TaskGate:
    """The app's gate, configured from ``app.conf`` on first use."""
    gate = getattr(app, _GATE_ATTR, None)
    return gate if isinstance(gate, TaskGate) else configure(app)


def limiter_for(app: Celery) -> Limiter:
    """The limiter the app's tasks use (for HTTP clients and operator calls)."""
    return gate_for(app).limiter


def _limiter_from_conf(conf: Mapping[str, Any]) -> Limiter:
    path = conf.get("queue_ratelimit_config")
    if path is None:
        configs = load_configs()
    elif str(path).endswith(".toml"):
        configs = load_configs(toml_path=path)
    elif str(path).endswith(".json"):
        configs = load_configs(json_path=path)
    else:
        raise ConfigError(None, "queue_ratelimit_config", path, "must be a .toml or .json file")
    url = conf.get(_URL)
    if url is None:
        return Limiter(MemoryBackend(), configs)
    prefix = conf.get("queue_ratelimit_prefix") or "qrl"
    return Limiter(open_backend(url, prefix=prefix, field=_URL), configs)


def _default_max_countdown(conf: Mapping[str, Any]) -> float:
    broker = str(conf.get("broker_url") or "")
    options = conf.get("broker_transport_options") or {}
    if broker.startswith(("redis", "rediss", "sentinel")):
        return min(600.0, float(options.get("visibility_timeout", 3600)) / 2)
    return 600.0

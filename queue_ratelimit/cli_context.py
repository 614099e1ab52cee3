"""What every ``queue-ratelimit`` command shares: the store and configuration it was
pointed at (``Context``), and a store's failure said so that the operator can act on it."""

from __future__ import annotations

import os

import redis

from queue_ratelimit.backends import (
    POSTGRES_SCHEMES,
    SQLITE_SCHEME,
    Backend,
    open_backend,
    redacted,
)
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import BackendError
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.registry import load_configs

__all__ = ["Context", "configs_from", "explain"]


def configs_from(path: str | None) -> dict[str, IntegrationConfig]:
    if path is None:
        return load_configs()
    if path.endswith(".json"):
        return load_configs(json_path=path)
    return load_configs(toml_path=path)


class Context:
    """What every command needs, built lazily so ``config`` works without Redis."""

    last: Context | None = None  # the latest, for the error line of ``main``

    def __init__(
        self, redis_url: str, prefix: str, config: str | None, backend: Backend | None = None
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.config_path = config
        self.backend = backend  # given: the commands use it (any Backend), not the URL's
        Context.last = self

    def limiter(self) -> tuple[Limiter, Backend]:
        """The limiter on the store (a SQLite file must exist: only ``migrate`` makes one,
        so that a mistyped path is said, not made)."""
        if self.backend is None and self.redis_url.startswith(SQLITE_SCHEME):
            path = self.redis_url[len(SQLITE_SCHEME) :]
            if not os.path.exists(path):
                raise BackendError(
                    "no such file: the workers make it at their first decision, and"
                    " `queue-ratelimit --store URL migrate` makes it now; check the path"
                )
        backend = self.backend or open_backend(self.redis_url, prefix=self.prefix)
        return Limiter(backend, configs_from(self.config_path)), backend


def explain(exc: BackendError, obj: Context | None) -> str:
    """A store's failure as the operator can act on it: what, where and what to check, in
    one line (a driver's message may span several: psycopg's does)."""
    return " ".join(_explain(exc, obj).split())


def _explain(exc: BackendError, obj: Context | None) -> str:
    where = f"Redis at {redacted(obj.redis_url)}" if obj else "the shared state"
    if obj and obj.redis_url.startswith(SQLITE_SCHEME):
        return f"the SQLite file {obj.redis_url[len(SQLITE_SCHEME) :]}: {exc}"
    if obj and obj.redis_url.startswith(POSTGRES_SCHEMES):
        return f"{exc} (is the server up, and the URL's user allowed in?)"
    cause = exc.__cause__
    detail = str(cause or exc)
    lowered = detail.lower()
    if isinstance(cause, redis.AuthenticationError) or any(
        word in lowered for word in ("wrongpass", "noauth", "auth <password>", "invalid password")
    ):
        return (
            f"{where} refused the credentials ({detail}); give them in the URL: "
            "redis://:PASSWORD@host:6379/0 or redis://USER:PASSWORD@host:6379/0"
        )
    if "db index" in lowered:
        return f"{where}: no such database ({detail}); use the database your workers use"
    if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
        reason = (
            "connection refused"
            if "refused" in lowered
            else "unknown host"
            if "not known" in lowered or "nodename" in lowered
            else "no answer in time"
            if isinstance(cause, redis.TimeoutError) or "timed out" in lowered
            else detail
        )
        return (
            f"cannot reach {where}: {reason}; is the server up, and is this the URL your "
            "workers use? (--redis or QUEUE_RATELIMIT_REDIS_URL)"
        )
    return f"{where}: {exc}"

"""Where limiter state lives: in this process (``MemoryBackend``), in Redis (``RedisBackend``),
in PostgreSQL (``PostgresBackend``) or in a SQLite file (``SQLiteBackend``)."""

from urllib.parse import parse_qsl, urlencode

from queue_ratelimit.backends.base import REMEMBER_FOR, Backend
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.errors import ConfigError

__all__ = [
    "POSTGRES_SCHEMES",
    "REDIS_SCHEMES",
    "SQLITE_SCHEME",
    "URL_FORMS",
    "Backend",
    "MemoryBackend",
    "open_backend",
    "redacted",
]

# the URL forms of backends/redis_connect.py (kept here too: importing that module imports
# redis-py, an optional dependency)
REDIS_SCHEMES = (
    "redis://",
    "rediss://",
    "unix://",
    "redis+cluster://",
    "rediss+cluster://",
    "redis+sentinel://",
    "rediss+sentinel://",
)
URL_FORMS = (
    "redis://host:port/db, rediss://..., unix:///path, "
    "redis+cluster://host:port,host:port or redis+sentinel://host:port,host:port/service/db"
)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
"""A PostgreSQL database's URL (libpq's): ``postgresql://user:password@host:port/dbname``."""
SQLITE_SCHEME = "sqlite:///"
"""A SQLite file's URL: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``."""


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, auth = head.partition("://")
    user = auth.partition(":")[0]
    return f"{scheme}://{user}:***@{tail}"


def _claim_ahead(url: str, field: str) -> tuple[str, float]:
    """A SQL store's URL without its ``claim_ahead=SECONDS`` query parameter, and that (0
    when absent); the other parameters (libpq's) are kept as they were.

    Raises:
        ConfigError: naming ``field``, when the value is not a number of seconds.
    """
    head, mark, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True) if mark else []
    given = [value for name, value in pairs if name == "claim_ahead"]
    if not given:
        return url, 0.0
    try:
        ahead = float(given[-1])
    except ValueError:
        raise ConfigError(
            None, field, f"...?claim_ahead={given[-1]}", "claim_ahead must be seconds"
        ) from None
    kept = [(name, value) for name, value in pairs if name != "claim_ahead"]
    return head + (f"?{urlencode(kept)}" if kept else ""), ahead


def open_backend(
    url: str,
    *,
    prefix: str = "qrl",
    field: str = "url",
    idle_ttl: float = 3600.0,
    remember_for: float = REMEMBER_FOR,
) -> Backend:
    """The backend a URL names: any Redis form (a ``RedisBackend`` with that key prefix: a
    single server, a Cluster or a Sentinel-managed master), ``postgresql://...`` (a
    ``PostgresBackend``: its tables made once by ``queue-ratelimit migrate``),
    ``sqlite:///path`` (a ``SQLiteBackend`` on that file, shared by the processes of one
    host; four slashes for an absolute path), or ``memory://`` (a new ``MemoryBackend``,
    for one process). A SQL store's URL may end with ``?claim_ahead=SECONDS`` (after
    libpq's parameters: ``&claim_ahead=``): the store's ``claim_ahead``. ``idle_ttl`` and
    ``remember_for``: the backend's (``memory://``'s too).

    Raises:
        ConfigError: any other URL, naming ``field``.
    """
    if url == "memory://":
        return MemoryBackend(idle_ttl=idle_ttl, remember_for=remember_for)
    if isinstance(url, str) and url.startswith(SQLITE_SCHEME):
        from queue_ratelimit.backends.sqlite import SQLiteBackend

        path, ahead = _claim_ahead(url[len(SQLITE_SCHEME) :], field)
        return SQLiteBackend(
            path, prefix=prefix, idle_ttl=idle_ttl, remember_for=remember_for, claim_ahead=ahead
        )
    if isinstance(url, str) and url.startswith(POSTGRES_SCHEMES):
        from queue_ratelimit.backends.postgres import PostgresBackend

        conninfo, ahead = _claim_ahead(url, field)
        return PostgresBackend(
            conninfo,
            prefix=prefix,
            idle_ttl=idle_ttl,
            remember_for=remember_for,
            claim_ahead=ahead,
        )
    if isinstance(url, str) and url.startswith(REDIS_SCHEMES):
        from queue_ratelimit.backends.redis import RedisBackend
        from queue_ratelimit.backends.redis_connect import client_from_url

        # (the URL again for the asyncio clients: a Cluster or Sentinel client has no twin)
        return RedisBackend(
            client_from_url(url, field),
            prefix=prefix,
            async_client=url,
            idle_ttl=idle_ttl,
            remember_for=remember_for,
        )
    shown = redacted(url) if isinstance(url, str) else url
    raise ConfigError(
        None,
        field,
        shown,
        f"must be memory://, sqlite:///path, postgresql://... or a Redis URL: {URL_FORMS}",
    )

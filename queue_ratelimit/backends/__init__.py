"""Where limiter state lives: in this process (``MemoryBackend``) or in Redis (``RedisBackend``)."""

from queue_ratelimit.backends.base import Backend
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.errors import ConfigError

__all__ = [
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


def open_backend(url: str, *, prefix: str = "qrl", field: str = "url") -> Backend:
    """The backend a URL names: any Redis form (a ``RedisBackend`` with that key prefix: a
    single server, a Cluster or a Sentinel-managed master), ``sqlite:///path`` (a
    ``SQLiteBackend`` on that file, shared by the processes of one host; four slashes for
    an absolute path), or ``memory://`` (a new ``MemoryBackend``, for one process).

    Raises:
        ConfigError: any other URL, naming ``field``.
    """
    if url == "memory://":
        return MemoryBackend()
    if isinstance(url, str) and url.startswith(SQLITE_SCHEME):
        from queue_ratelimit.backends.sqlite import SQLiteBackend

        return SQLiteBackend(url[len(SQLITE_SCHEME) :], prefix=prefix)
    if isinstance(url, str) and url.startswith(REDIS_SCHEMES):
        from queue_ratelimit.backends.redis import RedisBackend
        from queue_ratelimit.backends.redis_connect import client_from_url

        # (the URL again for the asyncio clients: a Cluster or Sentinel client has no twin)
        return RedisBackend(client_from_url(url, field), prefix=prefix, async_client=url)
    shown = redacted(url) if isinstance(url, str) else url
    raise ConfigError(
        None, field, shown, f"must be memory://, sqlite:///path or a Redis URL: {URL_FORMS}"
    )

"""Where limiter state lives: in this process (``MemoryBackend``) or in Redis (``RedisBackend``)."""

from queue_ratelimit.backends.base import Backend
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.errors import ConfigError

__all__ = ["Backend", "MemoryBackend", "open_backend"]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_backend(url: str, *, prefix: str = "qrl") -> Backend:
    """The backend a URL names: ``redis://``, ``rediss://`` or ``unix://`` (a ``RedisBackend``
    with that key prefix), or ``memory://`` (a new ``MemoryBackend``, for one process).

    Raises:
        ConfigError: any other URL (the field is ``url``).
    """
    if not isinstance(url, str):
        raise ConfigError(
            None, "url", url, "must be a redis://, rediss://, unix:// or memory:// URL"
        )
    if url == "memory://":
        return MemoryBackend()
    if url.startswith(_REDIS_SCHEMES):
        from queue_ratelimit.backends.redis import RedisBackend

        return RedisBackend(url, prefix=prefix)
    raise ConfigError(None, "url", url, "must be a redis://, rediss://, unix:// or memory:// URL")

"""Where limiter state lives: in this process (``MemoryBackend``) or in Redis (``RedisBackend``)."""

from queue_ratelimit.backends.base import Backend
from queue_ratelimit.backends.memory import MemoryBackend

__all__ = ["Backend", "MemoryBackend"]

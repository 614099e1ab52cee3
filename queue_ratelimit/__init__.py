"""queue_ratelimit: make a fleet of Celery, RQ and Dramatiq workers one polite API client.

The public API, grouped by concept. Backends needing optional extras are imported from their
modules (``queue_ratelimit.backends.redis.RedisBackend`` needs ``queue_ratelimit[redis]``).
"""

from typing import TYPE_CHECKING

from queue_ratelimit.async_limiter import AsyncCall, AsyncLimiter
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.config import IntegrationConfig, LimitConfig
from queue_ratelimit.dialect import Dialect
from queue_ratelimit.endpoints import Endpoint
from queue_ratelimit.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidRequest,
    QueueRateLimitError,
    QuotaSpent,
    RateLimited,
    RequeueBudgetExhausted,
)
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.outcome import Outcome
from queue_ratelimit.policy.signals_http import Quota, RateLimitInfo, parse_rate_limit
from queue_ratelimit.policy.state import (
    Decision,
    Feedback,
    LimitSnapshot,
    ReportResult,
    Reservation,
    Snapshot,
)
from queue_ratelimit.registry import (
    BUILTIN_INTEGRATIONS,
    get_integration,
    list_integrations,
    load_configs,
    merge_configs,
)
from queue_ratelimit.runner import TaskLimits, requeue_after

__all__ = [
    # configuration
    "BUILTIN_INTEGRATIONS",
    "IntegrationConfig",
    "LimitConfig",
    "Dialect",
    "Endpoint",
    "get_integration",
    "list_integrations",
    "load_configs",
    "merge_configs",
    # the limiter and what it answers
    "Limiter",
    "AsyncLimiter",
    "AsyncCall",
    "Decision",
    "Reservation",
    "Feedback",
    "Outcome",
    "ReportResult",
    "Snapshot",
    "LimitSnapshot",
    # reading upstream signals
    "parse_rate_limit",
    "RateLimitInfo",
    "Quota",
    # tasks, whatever framework runs them
    "TaskLimits",
    "requeue_after",
    # backends
    "MemoryBackend",
    # errors
    "QueueRateLimitError",
    "ConfigError",
    "InvalidRequest",
    "BackendError",
    "BackendUnavailable",
    "RateLimited",
    "RequeueBudgetExhausted",
    "QuotaSpent",
]

__version__ = "0.1.0"


if TYPE_CHECKING:  # the old name, for type checkers (at run time it warns, below)
    RateLimitSignal = RateLimitInfo


def __getattr__(name: str) -> object:
    if name == "RateLimitSignal":  # the old name, kept for one release (it warns)
        from queue_ratelimit.policy import signals_http

        return getattr(signals_http, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

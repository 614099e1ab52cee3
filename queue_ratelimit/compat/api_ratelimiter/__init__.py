"""The ``api_ratelimiter`` library's public names, on this project's limiter.

Change the import and the code runs as it did::

    from queue_ratelimit.compat.api_ratelimiter.clients import make_client_from_config
    # was: from api_ratelimiter.clients import make_client_from_config

The modules mirror the library's (``dynamic_ratelimiter``, ``api_rate_config``,
``clients``, ``config_overrides``, ``enterprise``) and this package exports every name. One
more argument moves the state into Redis, shared by every process: ``backend=RedisBackend(url)``
on ``DynamicRateLimiter``, ``make_client_from_config``, ``make_client_for`` or
``EnterpriseClient``. What differs is in ``docs/migrate-dynamic-api-client.md``.
"""

from queue_ratelimit.compat.api_ratelimiter.api_rate_config import (
    API_RATE_CONFIGS,
    ApiRateConfig,
    get_api_rate_config,
)
from queue_ratelimit.compat.api_ratelimiter.clients import (
    BASE_URLS,
    DynamicAPIClient,
    make_client_for,
    make_client_from_config,
)
from queue_ratelimit.compat.api_ratelimiter.config_overrides import (
    list_available_integrations,
    load_api_rate_overrides_json,
    merged_api_rate_configs,
)
from queue_ratelimit.compat.api_ratelimiter.dynamic_ratelimiter import (
    CircuitOpenError,
    DynamicRateLimiter,
)
from queue_ratelimit.compat.api_ratelimiter.enterprise import (
    CircuitBreakerConfig,
    EnterpriseClient,
)

__all__ = [
    "API_RATE_CONFIGS",
    "BASE_URLS",
    "ApiRateConfig",
    "CircuitBreakerConfig",
    "CircuitOpenError",
    "DynamicAPIClient",
    "DynamicRateLimiter",
    "EnterpriseClient",
    "get_api_rate_config",
    "list_available_integrations",
    "load_api_rate_overrides_json",
    "make_client_for",
    "make_client_from_config",
    "merged_api_rate_configs",
]

"""``ApiRateConfig`` and the built-in per-API configs, by the ``api_ratelimiter`` names."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.registry import BUILTIN_INTEGRATIONS, get_integration

__all__ = ["API_RATE_CONFIGS", "ApiRateConfig", "get_api_rate_config"]


@dataclass(frozen=True)
class ApiRateConfig:
    """One API's limiter settings, as ``api_ratelimiter`` names them.

    ``to_integration`` turns it into this project's validated
    :class:`~queue_ratelimit.IntegrationConfig` (an invalid value raises
    :class:`~queue_ratelimit.ConfigError` naming the field). ``slow_start`` is off: the rate
    starts at ``rate_limit_per_sec`` and climbs by ``increase_factor`` per success, as it did.
    """

    name: str = "default"
    rate_limit_per_sec: float = 1.0
    burst_size: float = 1.0
    increase_factor: float = 0.1
    decrease_factor: float = 0.5
    min_rate: float = 0.1
    max_rate: float = 10.0
    cooldown_multiplier: float = 2.0
    backoff_status_codes: tuple[int, ...] = field(default=(429, 503))

    def to_integration(self, **more: Any) -> IntegrationConfig:
        """This config as an ``IntegrationConfig`` (``more``: further fields of it)."""
        shared = {name: getattr(self, name) for name in _SHARED}
        codes = frozenset(self.backoff_status_codes)
        return IntegrationConfig(**shared, backoff_status_codes=codes, slow_start=False, **more)

    @classmethod
    def from_integration(cls, config: IntegrationConfig) -> ApiRateConfig:
        """The ``ApiRateConfig`` view of an integration's config."""
        shared = {name: getattr(config, name) for name in _SHARED}
        return cls(**shared, backoff_status_codes=tuple(sorted(config.backoff_status_codes)))


_SHARED = tuple(f.name for f in fields(ApiRateConfig) if f.name != "backoff_status_codes")
"""The fields an ``ApiRateConfig`` and an ``IntegrationConfig`` share, by the same names."""

API_RATE_CONFIGS: dict[str, ApiRateConfig] = {
    name: ApiRateConfig.from_integration(config) for name, config in BUILTIN_INTEGRATIONS.items()
}
"""The built-in configs by name (this project's built-ins, with their published sources)."""


def get_api_rate_config(name: str) -> ApiRateConfig:
    """The built-in config of ``name``; ``ConfigError`` naming the known ones when unknown."""
    return ApiRateConfig.from_integration(get_integration(name))

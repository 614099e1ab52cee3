"""What the backends need of an integration's config, derived once: its plan and costs."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from queue_ratelimit.config import PRIMARY_LIMIT, IntegrationConfig, LimitConfig
from queue_ratelimit.errors import InvalidRequest
from queue_ratelimit.policy.state import LimitParams, Plan

__all__ = ["Cost", "Prepared", "plan_for"]

Cost = float | Mapping[str, float]
_ONE_REQUEST: Mapping[str, float] = MappingProxyType({PRIMARY_LIMIT: 1.0})


def _params(name: str, src: IntegrationConfig | LimitConfig) -> LimitParams:
    window = src.window if isinstance(src, LimitConfig) else 0.0
    if window > 0:  # a fixed window: burst units each window, at a fixed nominal rate
        rate = src.burst_size / window
        if isinstance(src, LimitConfig) and src.sliding:  # (LimitParams.window < 0)
            window = -window
        return LimitParams(name, rate, src.burst_size, rate, rate, 0.0, src.decrease_factor, window)
    return LimitParams(
        name,
        src.rate_limit_per_sec,
        src.burst_size,
        src.min_rate,
        src.max_rate,
        src.increase_factor,
        src.decrease_factor,
    )


def plan_for(config: IntegrationConfig) -> Plan:
    """What a backend needs of ``config``: its limits (``requests`` first) and settings."""
    limits = (_params(PRIMARY_LIMIT, config), *(_params(lim.name, lim) for lim in config.limits))
    app = None
    if config.app_limit is not None:  # the integration-wide level: in requests, as its own key
        up = config.app_limit
        app = Plan(
            limits=(_params(PRIMARY_LIMIT, up),),
            cooldown_multiplier=config.cooldown_multiplier,
            max_backoff=config.max_backoff,
            max_quota_wait=config.max_quota_wait,
            slow_start=config.slow_start and up.increase_factor > 0 and up.window <= 0,
        )
    return Plan(
        limits=limits,
        app=app,
        app_backoffs=config.app_backoffs,
        fair_share=app is not None and config.fair_share,
        weights=tuple(config.tenant_weights.items()),
        max_concurrent=config.max_concurrent,
        lease_ttl=config.lease_ttl,
        cooldown_multiplier=config.cooldown_multiplier,
        max_backoff=config.max_backoff,
        max_quota_wait=config.max_quota_wait,
        breaker_threshold=config.breaker_failure_threshold,
        breaker_open_seconds=config.breaker_open_seconds,
        slow_start=config.slow_start and config.increase_factor > 0,
    )


@dataclass(frozen=True)
class Prepared:
    """An integration's config with what every call derives from it, computed once."""

    config: IntegrationConfig
    plan: Plan
    bursts: dict[str, float]
    whole: frozenset[str] = field(init=False)  # limits whose costs are whole units (sliding)

    def __post_init__(self) -> None:
        slides = frozenset(lim.name for lim in self.plan.limits if lim.slide > 0)
        object.__setattr__(self, "whole", slides)

    def costs(self, cost: Cost) -> Mapping[str, float]:
        """Cost per limit: a number charges ``requests``; a mapping names limits
        (``requests`` defaults to 1, other limits to 0)."""
        if cost == 1.0 and self.bursts[PRIMARY_LIMIT] >= 1.0:  # the usual call: no dict built
            return _ONE_REQUEST
        if isinstance(cost, int | float):
            wanted = {PRIMARY_LIMIT: float(cost)}
        else:
            wanted = {PRIMARY_LIMIT: 1.0, **cost}
        checked: dict[str, float] = {}
        for name, value in wanted.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InvalidRequest(
                    f"{self.config.name}: cost {value!r} for {name!r} is not a number"
                )
            checked[name] = value = float(value)  # what the backends pack (and Redis keys)
            burst = self.bursts.get(name)
            if burst is None:
                have = sorted(self.bursts)
                raise InvalidRequest(f"{self.config.name}: no limit named {name!r}; have {have}")
            if not 0 <= value <= burst:
                raise InvalidRequest(
                    f"{self.config.name}: cost {value!r} for {name!r} must lie in "
                    f"[0, burst {burst}]"
                )
            if name in self.whole and not value.is_integer():
                raise InvalidRequest(
                    f"{self.config.name}: cost {value!r} for {name!r} must be whole units "
                    "(a sliding window counts each)"
                )
        return checked

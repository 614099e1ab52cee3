"""Validated, immutable per-integration configuration.

An :class:`IntegrationConfig` is everything the limiter knows about one upstream API: the
AIMD bounds of its primary ``requests`` limit, how to back off, how long a task may wait in
the worker before it is requeued, the requeue budget, the optional concurrency limit, the
circuit breaker, and any extra named limits (:class:`LimitConfig`, e.g. OpenAI tokens).

Both classes validate eagerly in ``__post_init__`` and raise
:class:`~queue_ratelimit.errors.ConfigError` naming the integration, the field and the value,
so a bad configuration fails at startup rather than in the middle of a task. Numbers given as
``int`` are stored as ``float``; ``bool`` is never accepted as a number.

Where the built-in configurations come from, and how TOML/JSON/environment overrides are
layered on top of them, is :mod:`queue_ratelimit.registry`'s job.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from queue_ratelimit.config_checks import (
    Checker,
    check_aimd,
    check_name,
    field_help,
    help_of_fields,
    reject_unknown,
    store,
)
from queue_ratelimit.dialect import GENERIC, Dialect
from queue_ratelimit.endpoints import Endpoint, endpoints_from
from queue_ratelimit.limit_config import (
    PRIMARY_LIMIT,
    LimitConfig,
    app_limit_from_mapping,
    check_limits,
    limits_from_mapping,
)

__all__ = [
    "APP_BACKOFFS",
    "BACKEND_ERROR_MODES",
    "PRIMARY_LIMIT",
    "IntegrationConfig",
    "LimitConfig",
]

BACKEND_ERROR_MODES = ("closed", "open")
"""What ``on_backend_error`` may say: fail closed (requeue) or open (local fallback limiter)."""

APP_BACKOFFS = ("tenant", "app", "both")
"""Which level of a chain a backoff signal lowers (``app_backoffs``; ``docs/limits.md``)."""

_INTEGRATION_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def _check_status_codes(check: Checker, value: object) -> frozenset[int]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        check.fail("backoff_status_codes", value, "must be a list of HTTP status codes")
    codes = frozenset(value)
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            check.fail(
                "backoff_status_codes",
                value,
                f"{code!r} is not an HTTP status code (an integer in 100..599)",
            )
    return codes


@dataclass(frozen=True)
class TenantWeights(Mapping[str, float]):
    """Fair share weights by tenant: an immutable mapping (hashable, picklable)."""

    pairs: tuple[tuple[str, float], ...]

    def __getitem__(self, tenant: str) -> float:
        for name, weight in self.pairs:
            if name == tenant:
                return weight
        raise KeyError(tenant)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)


def _check_weights(check: Checker, value: object) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        check.fail("tenant_weights", value, "must be a table of tenant names to weights")
    weights = {}
    for tenant, weight in value.items():
        if not isinstance(tenant, str) or not tenant:
            check.fail("tenant_weights", tenant, "tenant names must be non-empty strings")
        weights[tenant] = check.number(f"tenant_weights.{tenant}", weight, positive=True)
    return TenantWeights(tuple(sorted(weights.items())))


@dataclass(frozen=True)
class IntegrationConfig:
    """Everything the limiter needs to know about one upstream API.

    The rate fields describe the primary ``requests`` limit (cost 1 per call); ``limits``
    adds further named limits. Instances are immutable and always valid: construction,
    :meth:`from_mapping` and :meth:`replace` all raise
    :class:`~queue_ratelimit.errors.ConfigError` on the first invalid field.
    """

    name: str = field(metadata=field_help("integration name: [a-z][a-z0-9_-]*, at most 64 chars"))
    rate_limit_per_sec: float = field(
        default=1.0, metadata=field_help("starting rate of the 'requests' limit, req/s")
    )
    burst_size: float = field(
        default=1.0, metadata=field_help("bucket capacity: requests allowed back to back (> 0)")
    )
    increase_factor: float = field(
        default=0.1,
        metadata=field_help(
            "additive increase in req/s per success (>= 0); per second near the last ceiling"
        ),
    )
    decrease_factor: float = field(
        default=0.5, metadata=field_help("multiplicative decrease per backoff event, in (0, 1)")
    )
    slow_start: bool = field(
        default=True,
        metadata=field_help(
            "until the first backoff, climb fast (about x2.7 per second of successes, at most "
            "twice the rate served) instead of by increase_factor"
        ),
    )
    min_rate: float = field(default=0.1, metadata=field_help("lowest rate AIMD may fall to, req/s"))
    max_rate: float = field(
        default=10.0, metadata=field_help("highest rate AIMD may climb to, req/s")
    )
    cooldown_multiplier: float = field(
        default=2.0, metadata=field_help("cooldown without Retry-After = this x current interval")
    )
    backoff_status_codes: frozenset[int] = field(
        default=frozenset({429, 503}), metadata=field_help("HTTP statuses that signal backoff")
    )
    max_backoff: float = field(
        default=300.0,
        metadata=field_help("clamp on a cooldown the upstream did not state, seconds (> 0)"),
    )
    max_quota_wait: float = field(
        default=86400.0,
        metadata=field_help(
            "clamp on a wait the upstream states (Retry-After, a quota's reset), seconds "
            "(>= max_backoff); tasks held past max_backoff are parked without spending budget"
        ),
    )
    max_wait: float = field(
        default=1.0, metadata=field_help("longest in-worker wait before requeueing, seconds")
    )
    cooldown_wait: float | None = field(
        default=None,
        metadata=field_help(
            "longest cooldown slept in the worker besides max_wait for the slot after it, "
            "seconds; unset: max_wait; 0 where workers also serve other integrations"
        ),
    )
    max_sleepers: int | None = field(
        default=None,
        metadata=field_help(
            "workers that may sleep at once for this integration's slots before a task (1 "
            "where workers also serve other integrations' queues; none: no cap)"
        ),
    )
    tenant_sleepers: int | None = field(
        default=1,
        metadata=field_help(
            "workers that may sleep at once for one tenant's slots before a task; the others "
            "requeue theirs with a reservation and move on (none: no cap)"
        ),
    )
    requeue_budget: int = field(
        default=100, metadata=field_help("requeues allowed per task before it fails (>= 0)")
    )
    max_concurrent: int | None = field(
        default=None, metadata=field_help("concurrent calls allowed (leases); none when unset")
    )
    lease_ttl: float = field(
        default=300.0, metadata=field_help("seconds after which an unreleased lease expires")
    )
    breaker_failure_threshold: int = field(
        default=5, metadata=field_help("consecutive failures that open the circuit breaker")
    )
    breaker_open_seconds: float = field(
        default=60.0, metadata=field_help("seconds the breaker stays open before one probe")
    )
    limits: tuple[LimitConfig, ...] = field(
        default=(), metadata=field_help("extra named limits (e.g. tokens), names unique")
    )
    on_backend_error: str = field(
        default="closed",
        metadata=field_help(
            "when Redis fails: 'closed' requeues tasks (callers get BackendUnavailable); "
            "'open' runs on a local fallback limiter"
        ),
    )
    fallback_processes: int = field(
        default=1,
        metadata=field_help(
            "processes sharing the limit: on a local fallback each takes 1/N of the rates (>= 1)"
        ),
    )
    app_limit: LimitConfig | None = field(
        default=None,
        metadata=field_help(
            "a limit over all the integration's tenants together, charged in the same "
            "decision as the tenant's own (its requests cost; see docs/limits.md); none: each "
            "tenant limited alone"
        ),
    )
    app_backoffs: str = field(
        default="tenant",
        metadata=field_help(
            "with an app_limit, which level a backoff signal lowers: 'tenant' (the token's), "
            "'app' (every tenant's) or 'both'"
        ),
    )
    fair_share: bool = field(
        default=True,
        metadata=field_help(
            "with an app_limit, each active tenant gets its weighted share of it, and what "
            "one leaves unused goes to the others (max-min fair; see docs/limits.md)"
        ),
    )
    tenant_weights: Mapping[str, float] = field(
        default_factory=lambda: TenantWeights(()),
        metadata=field_help("fair share weights by tenant name (> 0; a tenant not named: 1)"),
    )
    endpoints: tuple[Endpoint, ...] = field(
        default=(),
        metadata=field_help(
            "requests the upstream limits apart, sent to another integration: each an "
            "integration, path prefixes and (optionally) methods (see docs/http.md)"
        ),
    )
    dialect: Dialect = field(
        default=GENERIC,
        metadata=field_help(
            "how the API states limits beyond the generic parser: statuses, body codes, "
            "header names, reset unit, documented wait (see docs/dialects.md)"
        ),
    )

    def __post_init__(self) -> None:
        check = Checker(self.name if isinstance(self.name, str) else None)
        check_name(check, self.name, _INTEGRATION_NAME, "[a-z][a-z0-9_-]*")
        check_aimd(self, check)
        if not isinstance(self.slow_start, bool):
            check.fail("slow_start", self.slow_start, "must be true or false")
        for name in (
            "cooldown_multiplier",
            "max_backoff",
            "max_quota_wait",
            "lease_ttl",
            "breaker_open_seconds",
        ):
            store(self, name, check.number(name, getattr(self, name), positive=True))
        if self.max_quota_wait < self.max_backoff:
            check.fail(
                "max_quota_wait",
                self.max_quota_wait,
                f"must be >= max_backoff ({self.max_backoff})",
            )
        store(self, "max_wait", check.number("max_wait", self.max_wait, positive=False))
        if self.cooldown_wait is not None:
            store(
                self,
                "cooldown_wait",
                check.number("cooldown_wait", self.cooldown_wait, positive=False),
            )
        store(
            self, "requeue_budget", check.integer("requeue_budget", self.requeue_budget, minimum=0)
        )
        store(
            self,
            "breaker_failure_threshold",
            check.integer("breaker_failure_threshold", self.breaker_failure_threshold, minimum=1),
        )
        for name in ("max_concurrent", "max_sleepers", "tenant_sleepers"):
            if getattr(self, name) is not None:
                store(self, name, check.integer(name, getattr(self, name), minimum=1))
        store(self, "backoff_status_codes", _check_status_codes(check, self.backoff_status_codes))
        store(self, "limits", check_limits(check, self.limits))
        if self.on_backend_error not in BACKEND_ERROR_MODES:
            check.fail("on_backend_error", self.on_backend_error, "must be 'open' or 'closed'")
        store(
            self,
            "fallback_processes",
            check.integer("fallback_processes", self.fallback_processes, minimum=1),
        )
        if self.app_limit is not None and not isinstance(self.app_limit, LimitConfig):
            check.fail(
                "app_limit", self.app_limit, "must be a LimitConfig (or a table of its fields)"
            )
        if self.app_limit is not None and self.app_limit.sliding:
            check.fail(
                "app_limit.sliding",
                True,
                "is not supported for the integration-wide level (use a fixed window)",
            )
        if self.app_limit is not None and self.app_limit.burst_size < 1.0:
            check.fail(
                "app_limit.burst_size",
                self.app_limit.burst_size,
                "must be >= 1: every call costs that level one request",
            )
        if not isinstance(self.fair_share, bool):
            check.fail("fair_share", self.fair_share, "must be true or false")
        store(self, "tenant_weights", _check_weights(check, self.tenant_weights))
        if self.tenant_weights and self.app_limit is None:
            check.fail(
                "tenant_weights",
                dict(self.tenant_weights),
                "weigh the tenants' shares of an app_limit, and there is none",
            )
        if self.app_backoffs not in APP_BACKOFFS:
            check.fail("app_backoffs", self.app_backoffs, "must be 'tenant', 'app' or 'both'")
        store(self, "dialect", Dialect.from_mapping(self.dialect, self.name))
        store(self, "endpoints", endpoints_from(self.endpoints, self.name))

    @classmethod
    def fields_help(cls) -> dict[str, str]:
        """Return each field's name mapped to its one-line help, in declaration order."""
        return help_of_fields(cls)

    @classmethod
    def settable_fields(cls) -> tuple[str, ...]:
        """Return the keys an override mapping may set (every field except ``name``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "name")

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, object]) -> IntegrationConfig:
        """Build a config from defaults plus ``data`` (a parsed TOML table or JSON object).

        ``backoff_status_codes`` may be any list of ints. ``limits`` is a mapping of limit
        name to that limit's fields; a limit mapped to ``None`` is left out. ``dialect`` is
        a table of :class:`~queue_ratelimit.Dialect` fields.

        Raises:
            ConfigError: a key is not a field (the reason lists the allowed keys), a limit
                lacks a required field, or any value is invalid.
        """
        check = Checker(name)
        if not isinstance(data, Mapping):
            check.fail("*", data, "settings must be a table / object of fields")
        reject_unknown(check, "", data, cls.settable_fields())
        kwargs: dict[str, Any] = dict(data)
        if "limits" in kwargs:
            kwargs["limits"] = limits_from_mapping(check, kwargs["limits"])
        if isinstance(kwargs.get("app_limit"), Mapping):
            kwargs["app_limit"] = app_limit_from_mapping(check, kwargs["app_limit"])
        return cls(name=name, **kwargs)

    def replace(self, **changes: Any) -> IntegrationConfig:
        """Return a copy with ``changes`` applied, validated like a new instance.

        Raises:
            ConfigError: a change names no field or sets an invalid value.
        """
        reject_unknown(Checker(self.name), "", changes, self.settable_fields())
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        """Return the fields except ``name``, JSON-friendly, shaped like an override table.

        ``{config.name: config.to_dict()}`` is a valid override file and round-trips through
        :meth:`from_mapping`.
        """
        data = {name: getattr(self, name) for name in self.settable_fields()}
        data["backoff_status_codes"] = sorted(self.backoff_status_codes)
        data["limits"] = {limit.name: limit.to_dict() for limit in self.limits}
        data["dialect"] = self.dialect.to_dict()
        data["endpoints"] = [endpoint.to_dict() for endpoint in self.endpoints]
        data["app_limit"] = None if self.app_limit is None else self.app_limit.to_dict()
        data["tenant_weights"] = dict(self.tenant_weights)
        return data

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
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from queue_ratelimit.dialect import GENERIC, Dialect
from queue_ratelimit.endpoints import Endpoint, endpoints_from
from queue_ratelimit.errors import ConfigError

__all__ = [
    "APP_BACKOFFS",
    "BACKEND_ERROR_MODES",
    "PRIMARY_LIMIT",
    "IntegrationConfig",
    "LimitConfig",
]

PRIMARY_LIMIT = "requests"
"""Name of the limit described by an integration's own rate fields; no extra limit may use it."""

BACKEND_ERROR_MODES = ("closed", "open")
"""What ``on_backend_error`` may say: fail closed (requeue) or open (local fallback limiter)."""

APP_BACKOFFS = ("tenant", "app", "both")
"""Which level of a chain a backoff signal lowers (``app_backoffs``; ``docs/limits.md``)."""

APP_LIMIT = "app"
"""The name an ``app_limit`` read from a mapping takes."""


_INTEGRATION_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_LIMIT_NAME = re.compile(r"[a-z][a-z0-9_]*")
_MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class _Checker:
    """Validates values for one config object, raising ConfigError with the right context."""

    integration: str | None
    prefix: str = ""

    def fail(self, field_name: str, value: object, reason: str) -> NoReturn:
        raise ConfigError(self.integration, self.prefix + field_name, value, reason)

    def number(self, field_name: str, value: object, *, positive: bool) -> float:
        """Return ``value`` as a finite float, > 0 when ``positive`` else >= 0."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(field_name, value, f"must be a number, not {type(value).__name__}")
        try:
            result = float(value)
        except OverflowError:
            self.fail(field_name, value, "is too large")
        if not math.isfinite(result):
            self.fail(field_name, value, "must be a finite number")
        if positive and result <= 0.0:
            self.fail(field_name, value, "must be > 0")
        if result < 0.0:
            self.fail(field_name, value, "must be >= 0")
        return result

    def fraction(self, field_name: str, value: object) -> float:
        """Return ``value`` as a float strictly between 0 and 1."""
        result = self.number(field_name, value, positive=False)
        if not 0.0 < result < 1.0:
            self.fail(field_name, value, "must be between 0 and 1, both exclusive")
        return result

    def integer(self, field_name: str, value: object, *, minimum: int) -> int:
        """Return ``value`` as an int >= ``minimum``; integral floats (``5.0``) are accepted."""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field_name, value, f"must be a whole number, not {type(value).__name__}")
        if value < minimum:
            self.fail(field_name, value, f"must be >= {minimum}")
        return value


def _store(owner: object, field_name: str, value: object) -> None:
    object.__setattr__(owner, field_name, value)


def _check_name(check: _Checker, value: object, pattern: re.Pattern[str], shape: str) -> None:
    if not isinstance(value, str):
        check.fail("name", value, f"must be a string, not {type(value).__name__}")
    if len(value) > _MAX_NAME_LENGTH or not pattern.fullmatch(value):
        check.fail("name", value, f"must match {shape} and be at most {_MAX_NAME_LENGTH} chars")


def _check_aimd(owner: IntegrationConfig | LimitConfig, check: _Checker) -> None:
    """Validate and normalise the AIMD fields an integration and an extra limit share."""
    for name in ("rate_limit_per_sec", "burst_size", "min_rate", "max_rate"):
        _store(owner, name, check.number(name, getattr(owner, name), positive=True))
    _store(
        owner,
        "increase_factor",
        check.number("increase_factor", owner.increase_factor, positive=False),
    )
    _store(owner, "decrease_factor", check.fraction("decrease_factor", owner.decrease_factor))
    if owner.max_rate < owner.min_rate:
        check.fail("max_rate", owner.max_rate, f"must be >= min_rate ({owner.min_rate})")
    if not owner.min_rate <= owner.rate_limit_per_sec <= owner.max_rate:
        check.fail(
            "rate_limit_per_sec",
            owner.rate_limit_per_sec,
            f"must lie within [min_rate, max_rate] = [{owner.min_rate}, {owner.max_rate}]",
        )


def _check_status_codes(check: _Checker, value: object) -> frozenset[int]:
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


def _check_limits(check: _Checker, value: object) -> tuple[LimitConfig, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        check.fail("limits", value, "must be a sequence of LimitConfig")
    limits = tuple(value)
    seen: set[str] = set()
    for limit in limits:
        if not isinstance(limit, LimitConfig):
            check.fail("limits", value, f"{limit!r} is not a LimitConfig")
        if limit.name in seen:
            check.fail(f"limits.{limit.name}.name", limit.name, "duplicate limit name")
        seen.add(limit.name)
    return limits


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


def _check_weights(check: _Checker, value: object) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        check.fail("tenant_weights", value, "must be a table of tenant names to weights")
    weights = {}
    for tenant, weight in value.items():
        if not isinstance(tenant, str) or not tenant:
            check.fail("tenant_weights", tenant, "tenant names must be non-empty strings")
        weights[tenant] = check.number(f"tenant_weights.{tenant}", weight, positive=True)
    return TenantWeights(tuple(sorted(weights.items())))


def _reject_unknown(
    check: _Checker, prefix: str, data: Mapping[Any, object], allowed: Sequence[str]
) -> None:
    for key, value in data.items():
        if key not in allowed:
            check.fail(f"{prefix}{key}", value, f"unknown field; allowed: {', '.join(allowed)}")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _fields_help(cls: type[Any]) -> dict[str, str]:
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}


SLIDING_MAX = 1000
"""The most units a sliding window may hold: it keeps each one's time (8 bytes) in the key."""


@dataclass(frozen=True)
class LimitConfig:
    """An additional named limit on an integration (e.g. OpenAI tokens per second).

    Each call to the limiter states its cost against every limit it names; the rate adapts
    by AIMD between ``min_rate`` and ``max_rate`` exactly like the primary ``requests`` limit.
    Validation errors name the field as ``limits.<name>.<field>``.
    """

    name: str = field(metadata=_help("limit name: [a-z][a-z0-9_]*, not 'requests'"))
    rate_limit_per_sec: float = field(metadata=_help("starting rate in units per second"))
    burst_size: float = field(metadata=_help("bucket capacity; also the largest single cost"))
    min_rate: float = field(metadata=_help("lowest rate AIMD may fall to, units/s (> 0)"))
    max_rate: float = field(metadata=_help("highest rate AIMD may climb to, units/s"))
    increase_factor: float = field(
        default=0.0, metadata=_help("additive increase in units/s per success (>= 0)")
    )
    decrease_factor: float = field(
        default=0.5, metadata=_help("multiplicative decrease per backoff, in (0, 1)")
    )
    window: float = field(
        default=0.0,
        metadata=_help(
            "a fixed window instead of a bucket: burst_size units per window of this many "
            "seconds, aligned to multiples of it since the epoch (86400: each UTC day); 0: a "
            "token bucket"
        ),
    )
    sliding: bool = field(
        default=False,
        metadata=_help(
            "with a window: at most burst_size units in any window of that many seconds "
            "(an exact sliding window, of at most 1000 units) instead of aligned ones"
        ),
    )

    def __post_init__(self) -> None:
        prefix = f"limits.{self.name}." if isinstance(self.name, str) else "limits."
        check = _Checker(None, prefix)
        _check_name(check, self.name, _LIMIT_NAME, "[a-z][a-z0-9_]*")
        if self.name == PRIMARY_LIMIT:
            check.fail("name", self.name, "is reserved for the integration's primary limit")
        _store(self, "window", check.number("window", self.window, positive=False))
        if not isinstance(self.sliding, bool):
            check.fail("sliding", self.sliding, "must be true or false")
        if self.sliding and self.window <= 0:
            check.fail("sliding", self.sliding, "needs a window (seconds) > 0")
        _check_aimd(self, check)
        if self.sliding and not (
            float(self.burst_size).is_integer() and 1 <= self.burst_size <= SLIDING_MAX
        ):
            check.fail(
                "burst_size",
                self.burst_size,
                f"of a sliding window must be a whole number of units in 1..{SLIDING_MAX} "
                "(it keeps the time of each; a fixed window or a bucket has no such bound)",
            )

    @classmethod
    def per_window(cls, name: str, units: float, window: float) -> LimitConfig:
        """``units`` per fixed ``window`` seconds, aligned to multiples of it since the
        epoch (``per_window("day", 10_000, 86_400)``: 10,000 each UTC day, renewed at
        00:00 UTC); exactly ``units`` are granted in each window, whatever the pace."""
        rate = units / window if window > 0 else units
        return cls(name, rate, units, rate, rate, window=window)

    @classmethod
    def per_sliding_window(cls, name: str, units: int, window: float) -> LimitConfig:
        """At most ``units`` in any ``window`` seconds (``per_sliding_window("minute", 100,
        60)``: never a 101st call within 60 s of the 100 before it, where a bucket of the
        same rate and burst lets up to twice that through in some minute)."""
        rate = units / window if window > 0 else float(units)
        return cls(name, rate, units, rate, rate, window=window, sliding=True)

    @classmethod
    def fields_help(cls) -> dict[str, str]:
        """Return each field's name mapped to its one-line help, in declaration order."""
        return _fields_help(cls)

    def to_dict(self) -> dict[str, object]:
        """Return the fields except ``name``, JSON-friendly, as an override file spells them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}


@dataclass(frozen=True)
class IntegrationConfig:
    """Everything the limiter needs to know about one upstream API.

    The rate fields describe the primary ``requests`` limit (cost 1 per call); ``limits``
    adds further named limits. Instances are immutable and always valid: construction,
    :meth:`from_mapping` and :meth:`replace` all raise
    :class:`~queue_ratelimit.errors.ConfigError` on the first invalid field.
    """

    name: str = field(metadata=_help("integration name: [a-z][a-z0-9_-]*, at most 64 chars"))
    rate_limit_per_sec: float = field(
        default=1.0, metadata=_help("starting rate of the 'requests' limit, req/s")
    )
    burst_size: float = field(
        default=1.0, metadata=_help("bucket capacity: requests allowed back to back (> 0)")
    )
    increase_factor: float = field(
        default=0.1,
        metadata=_help(
            "additive increase in req/s per success (>= 0); per second near the last ceiling"
        ),
    )
    decrease_factor: float = field(
        default=0.5, metadata=_help("multiplicative decrease per backoff event, in (0, 1)")
    )
    slow_start: bool = field(
        default=True,
        metadata=_help(
            "until the first backoff, climb fast (about x2.7 per second of successes, at most "
            "twice the rate served) instead of by increase_factor"
        ),
    )
    min_rate: float = field(default=0.1, metadata=_help("lowest rate AIMD may fall to, req/s"))
    max_rate: float = field(default=10.0, metadata=_help("highest rate AIMD may climb to, req/s"))
    cooldown_multiplier: float = field(
        default=2.0, metadata=_help("cooldown without Retry-After = this x current interval")
    )
    backoff_status_codes: frozenset[int] = field(
        default=frozenset({429, 503}), metadata=_help("HTTP statuses that signal backoff")
    )
    max_backoff: float = field(
        default=300.0,
        metadata=_help("clamp on a cooldown the upstream did not state, seconds (> 0)"),
    )
    max_quota_wait: float = field(
        default=86400.0,
        metadata=_help(
            "clamp on a wait the upstream states (Retry-After, a quota's reset), seconds "
            "(>= max_backoff); tasks held past max_backoff are parked without spending budget"
        ),
    )
    max_wait: float = field(
        default=1.0, metadata=_help("longest in-worker wait before requeueing, seconds")
    )
    cooldown_wait: float | None = field(
        default=None,
        metadata=_help(
            "longest cooldown slept in the worker besides max_wait for the slot after it, "
            "seconds; unset: max_wait; 0 where workers also serve other integrations"
        ),
    )
    max_sleepers: int | None = field(
        default=None,
        metadata=_help(
            "workers that may sleep at once for this integration's slots before a task (1 "
            "where workers also serve other integrations' queues; none: no cap)"
        ),
    )
    tenant_sleepers: int | None = field(
        default=1,
        metadata=_help(
            "workers that may sleep at once for one tenant's slots before a task; the others "
            "requeue theirs with a reservation and move on (none: no cap)"
        ),
    )
    requeue_budget: int = field(
        default=100, metadata=_help("requeues allowed per task before it fails (>= 0)")
    )
    max_concurrent: int | None = field(
        default=None, metadata=_help("concurrent calls allowed (leases); none when unset")
    )
    lease_ttl: float = field(
        default=300.0, metadata=_help("seconds after which an unreleased lease expires")
    )
    breaker_failure_threshold: int = field(
        default=5, metadata=_help("consecutive failures that open the circuit breaker")
    )
    breaker_open_seconds: float = field(
        default=60.0, metadata=_help("seconds the breaker stays open before one probe")
    )
    limits: tuple[LimitConfig, ...] = field(
        default=(), metadata=_help("extra named limits (e.g. tokens), names unique")
    )
    on_backend_error: str = field(
        default="closed",
        metadata=_help(
            "when Redis fails: 'closed' requeues tasks (callers get BackendUnavailable); "
            "'open' runs on a local fallback limiter"
        ),
    )
    fallback_processes: int = field(
        default=1,
        metadata=_help(
            "processes sharing the limit: on a local fallback each takes 1/N of the rates (>= 1)"
        ),
    )
    app_limit: LimitConfig | None = field(
        default=None,
        metadata=_help(
            "a limit over all the integration's tenants together, charged in the same "
            "decision as the tenant's own (its requests cost; see docs/limits.md); none: each "
            "tenant limited alone"
        ),
    )
    app_backoffs: str = field(
        default="tenant",
        metadata=_help(
            "with an app_limit, which level a backoff signal lowers: 'tenant' (the token's), "
            "'app' (every tenant's) or 'both'"
        ),
    )
    fair_share: bool = field(
        default=True,
        metadata=_help(
            "with an app_limit, each active tenant gets its weighted share of it, and what "
            "one leaves unused goes to the others (max-min fair; see docs/limits.md)"
        ),
    )
    tenant_weights: Mapping[str, float] = field(
        default_factory=lambda: TenantWeights(()),
        metadata=_help("fair share weights by tenant name (> 0; a tenant not named: 1)"),
    )
    endpoints: tuple[Endpoint, ...] = field(
        default=(),
        metadata=_help(
            "requests the upstream limits apart, sent to another integration: each an "
            "integration, path prefixes and (optionally) methods (see docs/http.md)"
        ),
    )
    dialect: Dialect = field(
        default=GENERIC,
        metadata=_help(
            "how the API states limits beyond the generic parser: statuses, body codes, "
            "header names, reset unit, documented wait (see docs/dialects.md)"
        ),
    )

    def __post_init__(self) -> None:
        check = _Checker(self.name if isinstance(self.name, str) else None)
        _check_name(check, self.name, _INTEGRATION_NAME, "[a-z][a-z0-9_-]*")
        _check_aimd(self, check)
        if not isinstance(self.slow_start, bool):
            check.fail("slow_start", self.slow_start, "must be true or false")
        for name in (
            "cooldown_multiplier",
            "max_backoff",
            "max_quota_wait",
            "lease_ttl",
            "breaker_open_seconds",
        ):
            _store(self, name, check.number(name, getattr(self, name), positive=True))
        if self.max_quota_wait < self.max_backoff:
            check.fail(
                "max_quota_wait",
                self.max_quota_wait,
                f"must be >= max_backoff ({self.max_backoff})",
            )
        _store(self, "max_wait", check.number("max_wait", self.max_wait, positive=False))
        if self.cooldown_wait is not None:
            _store(
                self,
                "cooldown_wait",
                check.number("cooldown_wait", self.cooldown_wait, positive=False),
            )
        _store(
            self, "requeue_budget", check.integer("requeue_budget", self.requeue_budget, minimum=0)
        )
        _store(
            self,
            "breaker_failure_threshold",
            check.integer("breaker_failure_threshold", self.breaker_failure_threshold, minimum=1),
        )
        for name in ("max_concurrent", "max_sleepers", "tenant_sleepers"):
            if getattr(self, name) is not None:
                _store(self, name, check.integer(name, getattr(self, name), minimum=1))
        _store(self, "backoff_status_codes", _check_status_codes(check, self.backoff_status_codes))
        _store(self, "limits", _check_limits(check, self.limits))
        if self.on_backend_error not in BACKEND_ERROR_MODES:
            check.fail("on_backend_error", self.on_backend_error, "must be 'open' or 'closed'")
        _store(
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
        _store(self, "tenant_weights", _check_weights(check, self.tenant_weights))
        if self.tenant_weights and self.app_limit is None:
            check.fail(
                "tenant_weights",
                dict(self.tenant_weights),
                "weigh the tenants' shares of an app_limit, and there is none",
            )
        if self.app_backoffs not in APP_BACKOFFS:
            check.fail("app_backoffs", self.app_backoffs, "must be 'tenant', 'app' or 'both'")
        _store(self, "dialect", Dialect.from_mapping(self.dialect, self.name))
        _store(self, "endpoints", endpoints_from(self.endpoints, self.name))

    @classmethod
    def fields_help(cls) -> dict[str, str]:
        """Return each field's name mapped to its one-line help, in declaration order."""
        return _fields_help(cls)

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
        check = _Checker(name)
        if not isinstance(data, Mapping):
            check.fail("*", data, "settings must be a table / object of fields")
        _reject_unknown(check, "", data, cls.settable_fields())
        kwargs: dict[str, Any] = dict(data)
        if "limits" in kwargs:
            kwargs["limits"] = _limits_from_mapping(check, kwargs["limits"])
        if isinstance(kwargs.get("app_limit"), Mapping):
            kwargs["app_limit"] = _app_limit_from_mapping(check, kwargs["app_limit"])
        return cls(name=name, **kwargs)

    def replace(self, **changes: Any) -> IntegrationConfig:
        """Return a copy with ``changes`` applied, validated like a new instance.

        Raises:
            ConfigError: a change names no field or sets an invalid value.
        """
        _reject_unknown(_Checker(self.name), "", changes, self.settable_fields())
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


def _limits_from_mapping(check: _Checker, value: object) -> tuple[LimitConfig, ...]:
    """Build extra limits from ``{name: {field: value}}``, attributing errors to the integration."""
    if not isinstance(value, Mapping):
        check.fail("limits", value, "must be a table mapping limit names to their fields")
    required = [
        f.name
        for f in dataclasses.fields(LimitConfig)
        if f.default is dataclasses.MISSING and f.name != "name"
    ]
    allowed = [f.name for f in dataclasses.fields(LimitConfig) if f.name != "name"]
    limits = []
    for limit_name, fields in value.items():
        if fields is None:
            continue
        where = f"limits.{limit_name}"
        if not isinstance(fields, Mapping):
            check.fail(where, fields, "must be a table of the limit's fields")
        _reject_unknown(check, f"{where}.", fields, allowed)
        window = fields.get("window")
        if isinstance(window, int | float) and window > 0 and "burst_size" in fields:
            # a fixed window: burst_size per window; its rates follow (per_window)
            rate = (
                fields["burst_size"] / window
                if isinstance(fields["burst_size"], int | float)
                else 1.0
            )
            fields = {"rate_limit_per_sec": rate, "min_rate": rate, "max_rate": rate, **fields}
        for key in required:
            if key not in fields:
                check.fail(f"{where}.{key}", None, "is required when defining a new limit")
        try:
            limits.append(LimitConfig(name=limit_name, **fields))
        except ConfigError as exc:
            raise ConfigError(check.integration, exc.field, exc.value, exc.reason) from None
    return tuple(limits)


def _app_limit_from_mapping(check: _Checker, fields: Mapping[str, object]) -> LimitConfig:
    """An ``app_limit`` table as a limit named ``app``; errors name ``app_limit.<field>``."""
    try:
        (limit,) = _limits_from_mapping(check, {APP_LIMIT: fields})
    except ConfigError as exc:
        where = (exc.field or "").replace(f"limits.{APP_LIMIT}", "app_limit", 1)
        raise ConfigError(check.integration, where, exc.value, exc.reason) from None
    return limit

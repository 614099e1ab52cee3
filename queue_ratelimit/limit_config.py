"""An integration's further named limits (:class:`LimitConfig`: tokens per minute, a daily
window, a sliding window), validated as eagerly as an ``IntegrationConfig`` (``config.py``),
and read from a mapping (an override file's ``limits`` and ``app_limit`` tables)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from queue_ratelimit.config_checks import (
    Checker,
    check_aimd,
    check_name,
    field_help,
    help_of_fields,
    reject_unknown,
    store,
)
from queue_ratelimit.errors import ConfigError

PRIMARY_LIMIT = "requests"
"""Name of the limit described by an integration's own rate fields; no extra limit may use it."""

APP_LIMIT = "app"
"""The name an ``app_limit`` read from a mapping takes."""

_LIMIT_NAME = re.compile(r"[a-z][a-z0-9_]*")

SLIDING_MAX = 1000
"""The most units a sliding window may hold: it keeps each one's time (8 bytes) in the key."""


@dataclass(frozen=True)
class LimitConfig:
    """An additional named limit on an integration (e.g. OpenAI tokens per second).

    Each call to the limiter states its cost against every limit it names; the rate adapts
    by AIMD between ``min_rate`` and ``max_rate`` exactly like the primary ``requests`` limit.
    Validation errors name the field as ``limits.<name>.<field>``.
    """

    name: str = field(metadata=field_help("limit name: [a-z][a-z0-9_]*, not 'requests'"))
    rate_limit_per_sec: float = field(metadata=field_help("starting rate in units per second"))
    burst_size: float = field(metadata=field_help("bucket capacity; also the largest single cost"))
    min_rate: float = field(metadata=field_help("lowest rate AIMD may fall to, units/s (> 0)"))
    max_rate: float = field(metadata=field_help("highest rate AIMD may climb to, units/s"))
    increase_factor: float = field(
        default=0.0, metadata=field_help("additive increase in units/s per success (>= 0)")
    )
    decrease_factor: float = field(
        default=0.5, metadata=field_help("multiplicative decrease per backoff, in (0, 1)")
    )
    window: float = field(
        default=0.0,
        metadata=field_help(
            "a fixed window instead of a bucket: burst_size units per window of this many "
            "seconds, aligned to multiples of it since the epoch (86400: each UTC day); 0: a "
            "token bucket"
        ),
    )
    sliding: bool = field(
        default=False,
        metadata=field_help(
            "with a window: at most burst_size units in any window of that many seconds "
            "(an exact sliding window, of at most 1000 units) instead of aligned ones"
        ),
    )

    def __post_init__(self) -> None:
        prefix = f"limits.{self.name}." if isinstance(self.name, str) else "limits."
        check = Checker(None, prefix)
        check_name(check, self.name, _LIMIT_NAME, "[a-z][a-z0-9_]*")
        if self.name == PRIMARY_LIMIT:
            check.fail("name", self.name, "is reserved for the integration's primary limit")
        store(self, "window", check.number("window", self.window, positive=False))
        if not isinstance(self.sliding, bool):
            check.fail("sliding", self.sliding, "must be true or false")
        if self.sliding and self.window <= 0:
            check.fail("sliding", self.sliding, "needs a window (seconds) > 0")
        check_aimd(self, check)
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
        return help_of_fields(cls)

    def to_dict(self) -> dict[str, object]:
        """Return the fields except ``name``, JSON-friendly, as an override file spells them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}


def check_limits(check: Checker, value: object) -> tuple[LimitConfig, ...]:
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


def limits_from_mapping(check: Checker, value: object) -> tuple[LimitConfig, ...]:
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
        reject_unknown(check, f"{where}.", fields, allowed)
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


def app_limit_from_mapping(check: Checker, fields: Mapping[str, object]) -> LimitConfig:
    """An ``app_limit`` table as a limit named ``app``; errors name ``app_limit.<field>``."""
    try:
        (limit,) = limits_from_mapping(check, {APP_LIMIT: fields})
    except ConfigError as exc:
        where = (exc.field or "").replace(f"limits.{APP_LIMIT}", "app_limit", 1)
        raise ConfigError(check.integration, where, exc.value, exc.reason) from None
    return limit

"""The checks every configuration class runs on its fields: each raises
:class:`~queue_ratelimit.errors.ConfigError` naming the integration, the field and the value
(``config.py``, ``limit_config.py``)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from queue_ratelimit.errors import ConfigError

if TYPE_CHECKING:
    from queue_ratelimit.config import IntegrationConfig
    from queue_ratelimit.limit_config import LimitConfig

MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class Checker:
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


def store(owner: object, field_name: str, value: object) -> None:
    object.__setattr__(owner, field_name, value)


def check_name(check: Checker, value: object, pattern: re.Pattern[str], shape: str) -> None:
    if not isinstance(value, str):
        check.fail("name", value, f"must be a string, not {type(value).__name__}")
    if len(value) > MAX_NAME_LENGTH or not pattern.fullmatch(value):
        check.fail("name", value, f"must match {shape} and be at most {MAX_NAME_LENGTH} chars")


def check_aimd(owner: IntegrationConfig | LimitConfig, check: Checker) -> None:
    """Validate and normalise the AIMD fields an integration and an extra limit share."""
    for name in ("rate_limit_per_sec", "burst_size", "min_rate", "max_rate"):
        store(owner, name, check.number(name, getattr(owner, name), positive=True))
    store(
        owner,
        "increase_factor",
        check.number("increase_factor", owner.increase_factor, positive=False),
    )
    store(owner, "decrease_factor", check.fraction("decrease_factor", owner.decrease_factor))
    if owner.max_rate < owner.min_rate:
        check.fail("max_rate", owner.max_rate, f"must be >= min_rate ({owner.min_rate})")
    if not owner.min_rate <= owner.rate_limit_per_sec <= owner.max_rate:
        check.fail(
            "rate_limit_per_sec",
            owner.rate_limit_per_sec,
            f"must lie within [min_rate, max_rate] = [{owner.min_rate}, {owner.max_rate}]",
        )


def reject_unknown(
    check: Checker, prefix: str, data: Mapping[Any, object], allowed: Sequence[str]
) -> None:
    for key, value in data.items():
        if key not in allowed:
            check.fail(f"{prefix}{key}", value, f"unknown field; allowed: {', '.join(allowed)}")


def field_help(text: str) -> dict[str, str]:
    return {"help": text}


def help_of_fields(cls: type[Any]) -> dict[str, str]:
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}

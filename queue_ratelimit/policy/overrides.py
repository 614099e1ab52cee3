"""Run-time overrides: an operator's bounds on a key's rate, obeyed by every worker.

``queue-ratelimit set notion --max-rate 2`` (or ``Limiter.set_override``) stores an
``Override`` in the shared state, for the integration or for one of its tenants. Each
worker reads it with the integration's breaker (``RedisBackend``: every ``breaker_poll``
seconds, 1 s by default) and decides with the bounds it sets on the ``requests`` limit:
AIMD goes on between them, and a current rate outside them is moved inside at the next
decision. An integration's override and a tenant's combine (the tighter of each bound).
``unset`` removes it; the config's bounds hold again.

Pure: the backends store and read overrides, this module says what they mean.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping

from queue_ratelimit.errors import ConfigError
from queue_ratelimit.policy.state import Plan

__all__ = ["BoundedPlans", "Override", "combined", "overridden"]


@dataclasses.dataclass(frozen=True)
class Override:
    """Bounds an operator set on a key's ``requests`` rate, and who set them when.

    Attributes:
        max_rate: the highest rate (calls per second) the key may run at; None: the config's.
        min_rate: the lowest rate AIMD may fall to; None: the config's. Equal to
            ``max_rate``, it pins the rate.
        by: who set it (the CLI: the operator's login), for the audit trail.
        at: when, in seconds since the epoch.
    """

    max_rate: float | None = None
    min_rate: float | None = None
    by: str = ""
    at: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_rate", "min_rate"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(None, name, value, "must be a number of calls per second")
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(None, name, value, "must be a finite number > 0")
        if self.max_rate is None and self.min_rate is None:
            raise ConfigError(None, "max_rate", None, "give max_rate, min_rate or both")
        high, low = self.max_rate, self.min_rate
        if high is not None and low is not None and low > high:
            raise ConfigError(None, "min_rate", low, "must be <= max_rate")

    def to_json(self) -> str:
        """The override as the shared state keeps it."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Override | None:
        """An override read back; None for anything that is not one (never raises)."""
        try:
            fields = json.loads(text)
            return cls(
                max_rate=fields.get("max_rate"),
                min_rate=fields.get("min_rate"),
                by=str(fields.get("by", ""))[:64],
                at=float(fields.get("at", 0.0)),
            )
        except (ValueError, TypeError, AttributeError, ConfigError):
            return None


def combined(
    overrides: Mapping[str | None, Override], tenant: str | None
) -> tuple[float | None, float | None] | None:
    """The bounds that hold for ``tenant``'s key: the integration's override (key None)
    and the tenant's, each bound the tighter of the two; None when neither is set."""
    found = [o for o in (overrides.get(None), overrides.get(tenant) if tenant else None) if o]
    if not found:
        return None
    highs = [o.max_rate for o in found if o.max_rate is not None]
    lows = [o.min_rate for o in found if o.min_rate is not None]
    return (min(highs) if highs else None, max(lows) if lows else None)


def overridden(plan: Plan, bounds: tuple[float | None, float | None]) -> Plan:
    """``plan`` with its ``requests`` limit held within ``bounds`` (max, min): the start
    rate moved inside them too; a min above the max is lowered to it."""
    high, low = bounds
    first = plan.limits[0]
    max_rate = first.max_rate if high is None else high
    min_rate = first.min_rate if low is None else low
    min_rate = min(min_rate, max_rate)
    rate = min(max(first.rate, min_rate), max_rate)
    limit = dataclasses.replace(first, rate=rate, min_rate=min_rate, max_rate=max_rate)
    return dataclasses.replace(plan, limits=(limit, *plan.limits[1:]))


class BoundedPlans:
    """The plans a backend decides with under overrides, made once per plan and bounds and
    kept (the backends cache a plan's packed form and arguments by the plan's identity, so
    the same bounds must give the same object)."""

    def __init__(self) -> None:
        self._made: dict[tuple[int, tuple[float | None, float | None]], tuple[Plan, Plan]] = {}

    def bounded(
        self, plan: Plan, overrides: Mapping[str | None, Override] | None, tenant: str | None
    ) -> Plan:
        """``plan`` within the overrides that hold for ``tenant``'s key; ``plan`` itself
        while none does."""
        bounds = combined(overrides, tenant) if overrides and plan.limits else None
        if bounds is None:
            return plan
        made = self._made.get((id(plan), bounds))
        if made is None or made[0] is not plan:  # (kept alive with it: its id is its own)
            if len(self._made) > 1024:
                self._made.clear()
            made = self._made[(id(plan), bounds)] = (plan, overridden(plan, bounds))
        return made[1]

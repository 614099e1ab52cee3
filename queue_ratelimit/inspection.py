"""What the operator tools read: every limiter key under a prefix, and how busy each is.

The CLI (``status``, ``top``, ``reset``) and the exporter read the store through the
``Backend`` protocol alone. A key is described by the local config when it names the
integration, else by the plan its workers stored (``Backend.stored_plan``), so the tools
need no config file; a key of neither is listed by name only. Each integration's keys are
read in one batch (``Backend.snapshots``: pipelined on Redis).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from queue_ratelimit.backends import Backend
from queue_ratelimit.errors import ConfigError
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.plans import plan_for
from queue_ratelimit.policy.state import Plan, Snapshot
from queue_ratelimit.registry import did_you_mean

__all__ = [
    "SORTS",
    "Activity",
    "KeyState",
    "activity",
    "counts_by_key",
    "known",
    "read_keys",
    "sort_keys",
    "tool_plan",
    "totals",
]

Key = tuple[str, str | None]

SORTS = ("name", "rate", "requeues", "429s", "owed")
"""How the tools order keys: by name, or busiest first (rate; requeues or 429s per second
since the last read; tokens owed to reservations)."""


@dataclass(frozen=True)
class KeyState:
    """One limiter key as the tools show it.

    Attributes:
        integration, tenant: the key (``tenant`` as the store lists it: ``#<digest>`` for a
            long name kept by digest).
        snapshot: its state (``None``: no limits described, shown by name only).
        plan: the plan it was read with.
    """

    integration: str
    tenant: str | None
    snapshot: Snapshot | None = None
    plan: Plan | None = None

    @property
    def key(self) -> Key:
        return (self.integration, self.tenant)

    @property
    def tenant_name(self) -> str:
        """The tenant's name (the stored one for a digest), ``""`` for the integration's key."""
        stored = self.snapshot.stored_name if self.snapshot else None
        return stored or self.tenant or ""

    @property
    def rate(self) -> float:
        return self.snapshot.limits[0].rate if self.snapshot and self.snapshot.limits else 0.0

    @property
    def tokens(self) -> float:
        return self.snapshot.limits[0].tokens if self.snapshot and self.snapshot.limits else 0.0

    @property
    def owed(self) -> float:
        """Tokens owed to reservations (the bucket below zero), 0 when none."""
        return max(0.0, -self.tokens)

    @property
    def counts(self) -> Mapping[str, int]:
        return self.snapshot.counts if self.snapshot else {}

    @property
    def exhausted_until(self) -> float | None:
        """When a hold past ``max_backoff`` ends (a spent quota's reset, epoch seconds)."""
        snap, plan = self.snapshot, self.plan
        if snap is None or plan is None or snap.cooldown_left <= plan.max_backoff:
            return None
        return snap.now + snap.cooldown_left

    def row(self) -> dict[str, Any]:
        """The key as ``status --json`` prints it."""
        row: dict[str, Any] = {"integration": self.integration, "tenant": self.tenant}
        snap, plan = self.snapshot, self.plan
        if snap is None or plan is None or not plan.limits:
            return row
        primary, bounds = snap.limit(plan.limits[0].name), plan.limits[0]
        if snap.stored_name:
            row["tenant_name"] = snap.stored_name
        row.update(
            rate=round(primary.rate, 4),
            min_rate=bounds.min_rate,
            max_rate=bounds.max_rate,
            tokens=round(primary.tokens, 3),
            reserved=round(primary.reserved, 3),
            cooldown_left=round(snap.cooldown_left, 3),
            leases=snap.leases,
            breaker=snap.breaker,
            breaker_wait=round(snap.breaker_wait, 3),
            counts=dict(snap.counts),
        )
        until = self.exhausted_until
        if until is not None:
            row["exhausted_until"] = utc_text(until)
        return row


def utc_text(when: float) -> str:
    """``when`` (epoch seconds) as an ISO 8601 UTC time, to the second."""
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def tool_plan(limiter: Limiter, backend: Backend, name: str) -> Plan | None:
    """The plan to read ``name``'s keys with: the local config's, else the one its workers
    stored, else none."""
    if name in limiter.configs:
        return plan_for(limiter.config(name))
    return backend.stored_plan(name)


def known(limiter: Limiter, backend: Backend, integration: str) -> None:
    """``integration`` is configured here, described by its workers or has keys; else a
    ``ConfigError`` naming the closest known integration."""
    if integration in limiter.configs or backend.stored_plan(integration) is not None:
        return
    if any(True for _ in backend.scan(integration)):
        return
    stored = {name for name, _ in backend.scan()}
    hint = did_you_mean(integration, sorted(stored | set(limiter.configs)))
    raise ConfigError(
        None, "integration", integration, f"not configured here and no key in the store{hint}"
    )


def read_keys(limiter: Limiter, backend: Backend, integration: str | None = None) -> list[KeyState]:
    """Every key in the store (of ``integration`` only when given), ordered by name."""
    tenants: dict[str, list[str | None]] = {}
    for name, tenant in backend.scan(integration):
        tenants.setdefault(name, []).append(tenant)
    keys: list[KeyState] = []
    for name in sorted(tenants):
        listed = sorted(tenants[name], key=lambda t: (t is not None, t or ""))
        plan = tool_plan(limiter, backend, name)
        if plan is None or not plan.limits:
            keys.extend(KeyState(name, tenant) for tenant in listed)
            continue
        snapshots = backend.snapshots(name, listed, plan)
        keys.extend(  # (a key idle past its expiry, kept for what it learned, is not listed)
            KeyState(name, t, s, plan) for t, s in zip(listed, snapshots, strict=True) if s.exists
        )
    return keys


def totals(keys: Iterable[KeyState]) -> dict[str, dict[str, int]]:
    """Each integration's event counts, summed over its keys."""
    summed: dict[str, dict[str, int]] = {}
    for state in keys:
        counts = summed.setdefault(state.integration, {})
        for event, value in state.counts.items():
            counts[event] = counts.get(event, 0) + value
    return summed


def activity(
    before: Mapping[Key, Mapping[str, int]], keys: Iterable[KeyState], elapsed: float
) -> dict[Key, dict[str, float]]:
    """Each key's events per second since ``before`` (its counts then, by key). A key that
    expired and came back counts from zero: never below 0."""
    rates: dict[Key, dict[str, float]] = {}
    for state in keys:
        then = before.get(state.key, {})
        rates[state.key] = {
            event: max(0.0, (value - then.get(event, 0)) / elapsed) if elapsed > 0 else 0.0
            for event, value in state.counts.items()
        }
    return rates


def counts_by_key(keys: Iterable[KeyState]) -> dict[Key, Mapping[str, int]]:
    """Each key's counts now (the ``before`` of the next ``activity``)."""
    return {state.key: state.counts for state in keys}


class Activity:
    """Each key's events per second between two reads of the keys (``top``'s refreshes, the
    exporter's scrapes): ``measure`` each read."""

    def __init__(self, keys: Iterable[KeyState] = ()) -> None:
        self._before: dict[Key, Mapping[str, int]] = counts_by_key(keys)
        self._read = time.monotonic()

    def measure(self, keys: Sequence[KeyState]) -> dict[Key, dict[str, float]]:
        """Events per second of ``keys`` since the previous read (or since made)."""
        now = time.monotonic()
        rates = activity(self._before, keys, now - self._read)
        self._before, self._read = counts_by_key(keys), now
        return rates


def sort_keys(
    keys: Sequence[KeyState], by: str, rates: Mapping[Key, Mapping[str, float]] | None = None
) -> list[KeyState]:
    """``keys`` ordered by ``by`` (one of ``SORTS``): by name as read, else busiest first,
    ties by name."""
    if by not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, not {by!r}")
    if by == "name":
        return list(keys)
    rates = rates or {}

    def score(state: KeyState) -> float:
        if by == "rate":
            return state.rate
        if by == "owed":
            return state.owed
        event = "requeues" if by == "requeues" else "backoffs"
        return rates.get(state.key, {}).get(event, 0.0)

    return sorted(keys, key=lambda state: -score(state))  # (stable: ties keep the name order)

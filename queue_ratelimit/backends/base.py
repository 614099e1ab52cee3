"""The contract every limiter backend fulfils (``MemoryBackend``, ``RedisBackend``).

Besides the decisions and reports the limiter makes, the contract holds what the operator
tools use (``scan``, ``snapshot``, ``stats``, ``reset``, ``set_breaker``): the CLI, the
exporter and the demo depend on it alone, so a new store only implements this protocol.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from queue_ratelimit.errors import ConfigError
from queue_ratelimit.policy.overrides import Override
from queue_ratelimit.policy.state import (
    AcquireRequest,
    Decision,
    Plan,
    Report,
    ReportResult,
    Snapshot,
)

REMEMBER_FOR = 7 * 86400.0
"""Seconds a key's learned rates outlive its idle expiry by default (a week)."""


def check_lifetimes(idle_ttl: object, remember_for: object) -> None:
    """Refuse an ``idle_ttl`` or ``remember_for`` that is not a number of seconds in range.

    Raises:
        ConfigError: naming the field: ``idle_ttl`` must be > 0, ``remember_for`` >= 0.
    """
    for name, value, least in (("idle_ttl", idle_ttl, 0.0), ("remember_for", remember_for, None)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(None, name, value, "must be a number of seconds")
        if not math.isfinite(value) or value < 0 or (least is not None and value <= least):
            bound = "> 0" if least is not None else ">= 0"
            raise ConfigError(None, name, value, f"must be a finite number of seconds {bound}")


class Backend(Protocol):
    """Stores limiter keys and applies the rules of ``queue_ratelimit.policy`` atomically.

    A key is an integration and an optional tenant; the ``Plan`` carries the integration's
    limits (``requests`` first) and settings. Every method is one atomic step (one round trip
    for Redis). Reports give the lease back and apply their ``Feedback`` (published quotas,
    cost corrections) first.
    """

    def acquire(self, request: AcquireRequest, plan: Plan) -> Decision:
        """Decide an acquire (or a redemption) and record it; an open breaker grants nothing.

        ``request.cooldown_wait`` and ``max_sleepers`` bound the waits granted
        (``admission.fits_wait``).
        """
        ...

    def report(self, report: Report, plan: Plan) -> ReportResult:
        """Record a call's answer (see ``Report``): a success (additive increase; closes a
        half-open breaker), a backoff (decrease once per congestion event, open a cooldown;
        counted as ``backoffs``) or a failure (the integration's breaker counts it)."""
        ...

    def release(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """Give a concurrency lease back without reporting an outcome."""
        ...

    def check(self, integration: str, tenant: str | None) -> tuple[int, float] | None:
        """The key's congestion epoch and seconds of cooldown left (None: it holds no
        state), read without changing it: whether a grant made earlier still holds."""
        ...

    def snapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        """Describe a key and its integration's breaker without changing them."""
        ...

    def app_snapshot(self, integration: str, plan: Plan) -> Snapshot:
        """Describe the integration-wide level of a chain (``plan.app``) and the breaker."""
        ...

    def snapshots(
        self, integration: str, tenants: Sequence[str | None], plan: Plan
    ) -> list[Snapshot]:
        """``snapshot`` of many keys of one integration, in ``tenants``' order, as the tools
        read them: the breaker read once, the keys in as few round trips as the store allows
        (Redis: pipelined, a thousand keys per round trip)."""
        ...

    def reset(self, integration: str, tenant: str | None) -> None:
        """Forget a key's state (rates, debts, cooldown, leases)."""
        ...

    def count(self, integration: str, event: str, tenant: str | None = None) -> None:
        """Add one to the key's count of ``event`` (``requeues``, ``budget_exhausted``); a
        key that holds no state (never used, or expired) counts nothing.

        Backoffs are counted by ``report`` itself, a refused acquire's ``refusal_event`` by
        ``acquire``."""
        ...

    def stats(self, integration: str) -> dict[str, int]:
        """The event counts of every live key of ``integration``, summed (each key's own are
        in its ``Snapshot.counts``)."""
        ...

    def stored_plan(self, integration: str) -> Plan | None:
        """The integration's plan as its users last stored it, if the backend keeps one (the
        tools show keys without the workers' config with it)."""
        ...

    def set_breaker(self, integration: str, state: str, open_seconds: float) -> None:
        """Force the integration's breaker ``open`` (for ``open_seconds``) or ``closed``."""
        ...

    def set_override(self, integration: str, tenant: str | None, override: Override | None) -> None:
        """Store an operator's bounds on the rate of ``integration`` (``tenant`` None: all
        its keys) in the shared state, or remove them (``override`` None); every process's
        decisions obey them (``policy/overrides.py``)."""
        ...

    def overrides(self, integration: str) -> dict[str | None, Override]:
        """The overrides set on ``integration``, by tenant (None: the integration's own)."""
        ...

    def purge(self, integration: str) -> None:
        """Delete everything stored for ``integration``: every key of it and its tenants,
        its breaker and its counts."""
        ...

    def describe(self) -> str:
        """Where the state lives, for a log line; never a password."""
        ...

    def scan(self, integration: str | None = None) -> Iterator[tuple[str, str | None]]:
        """Every stored limiter key as ``(integration, tenant)``, of ``integration`` only
        when given. A tenant a backend keeps only by its digest is listed as ``#<digest>``.
        """
        ...


class AsyncBackend(Protocol):
    """The calls an ``AsyncLimiter`` makes, for an event loop: ``Backend``'s, awaited.

    ``RedisBackend`` runs them on ``redis.asyncio`` (the same script), ``MemoryBackend``
    directly (they wait for no I/O). A backend without them is run in a worker thread.
    """

    async def aacquire(self, request: AcquireRequest, plan: Plan) -> Decision:
        """``Backend.acquire``."""
        ...

    async def areport(self, report: Report, plan: Plan) -> ReportResult:
        """``Backend.report``."""
        ...

    async def arelease(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """``Backend.release``."""
        ...

    async def acheck(self, integration: str, tenant: str | None) -> tuple[int, float] | None:
        """``Backend.check``."""
        ...

    async def acount(self, integration: str, event: str, tenant: str | None = None) -> None:
        """``Backend.count``."""
        ...

    async def asnapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        """``Backend.snapshot``."""
        ...


async def awaited(backend: object, call: str, *args: Any) -> Any:
    """``backend.<call>(*args)`` for an event loop: its asyncio twin ``a<call>`` when it has
    one (``AsyncBackend``), else the blocking call in a worker thread."""
    twin = getattr(backend, "a" + call, None)
    if twin is not None:
        return await twin(*args)
    return await asyncio.to_thread(getattr(backend, call), *args)

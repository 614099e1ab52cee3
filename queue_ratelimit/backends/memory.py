"""Limiter state in this process: thread-safe, the embedded default for one process and tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from queue_ratelimit.backends.base import REMEMBER_FOR, check_lifetimes
from queue_ratelimit.policy import aimd, fair, steps
from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy.overrides import BoundedPlans, Override
from queue_ratelimit.policy.state import (
    AcquireRequest,
    Decision,
    KeyState,
    Plan,
    Report,
    ReportResult,
    Snapshot,
)

_Key = tuple[str, "str | None"]
_SWEEP_EVERY = 1024
_T = TypeVar("_T")


def _app_key(integration: str) -> _Key:
    """Where a chain's integration-wide level is kept (no integration's name starts so)."""
    return ("\0app:" + integration, None)


class MemoryBackend:
    """Keeps every key in a dict guarded by one lock; idle keys are dropped like Redis expiry.

    Args:
        clock: returns the current time in seconds; inject a fake one in tests.
        idle_ttl: a key with no debt and no cooldown is forgotten this long after last use.
        remember_for: seconds past that for which what the key learned (its ``peak`` and
            served ceiling) is kept: a key used again in that time starts near them.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        idle_ttl: float = 3600.0,
        remember_for: float = REMEMBER_FOR,
    ) -> None:
        check_lifetimes(idle_ttl, remember_for)
        self._clock = clock
        self._idle_ttl = idle_ttl
        self._remember_for = remember_for
        self._lock = threading.Lock()
        self._keys: dict[_Key, tuple[KeyState, float]] = {}  # state, expiry (idle_ttl)
        self._breakers: dict[str, brk.BreakerState] = {}
        self._plans: dict[str, Plan] = {}
        self._overrides: dict[str, dict[str | None, Override]] = {}
        self._fair: dict[str, fair.FairState] = {}  # fair share: per chained integration
        self._bounded_plans = BoundedPlans()
        self._ops = 0

    def _load(self, key: _Key, now: float) -> KeyState | None:
        """The key's state while it lives (an expired one is only remembered)."""
        entry = self._keys.get(key)
        if entry is None or entry[1] <= now:
            if entry is not None and entry[1] + self._remember_for <= now:
                del self._keys[key]
            return None
        return entry[0]

    def _start(self, key: _Key, now: float, plan: Plan) -> KeyState:
        """The key's state, or a new one: revived from what it learned, when remembered."""
        return steps.start(self._keys.get(key), now, plan, self._remember_for)

    def _store(self, key: _Key, state: KeyState, now: float) -> None:
        self._keys[key] = (state, now + aimd.idle_expiry(state, now, self._idle_ttl))
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            gone = now - self._remember_for
            for stale in [k for k, (_, exp) in self._keys.items() if exp <= gone]:
                del self._keys[stale]

    def set_override(self, integration: str, tenant: str | None, override: Override | None) -> None:
        """See ``Backend.set_override``."""
        with self._lock:
            held = self._overrides.setdefault(integration, {})
            if override is None:
                held.pop(tenant, None)
            else:
                held[tenant] = override
            if not held:
                del self._overrides[integration]

    def overrides(self, integration: str) -> dict[str | None, Override]:
        """See ``Backend.overrides``."""
        with self._lock:
            return dict(self._overrides.get(integration, {}))

    def _bounded(self, integration: str, tenant: str | None, plan: Plan) -> Plan:
        """``plan`` within the overrides set for the key (the same object while none is)."""
        return self._bounded_plans.bounded(plan, self._overrides.get(integration), tenant)

    def _apply(
        self,
        integration: str,
        tenant: str | None,
        plan: Plan,
        step: Callable[[KeyState, brk.BreakerState, float, KeyState | None], tuple[_T, bool]],
    ) -> _T:
        """Run ``step`` on the key's state, the breaker and (with a chain) the state of the
        integration-wide level, which is kept when ``step`` says it changed it."""
        key = (integration, tenant)
        with self._lock:
            now = self._clock()
            state = self._start(key, now, plan)
            upper = None if plan.app is None else self._start(_app_key(integration), now, plan.app)
            breaker = self._breakers.get(integration) or brk.BreakerState()
            result, touched = step(state, breaker, now, upper)
            self._store(key, state, now)
            if upper is not None and touched:
                self._store(_app_key(integration), upper, now)
            if breaker.is_default:
                self._breakers.pop(integration, None)
            else:
                self._breakers[integration] = breaker
            return result

    def acquire(self, request: AcquireRequest, plan: Plan) -> Decision:
        """See ``Backend.acquire``."""

        def step(
            state: KeyState, breaker: brk.BreakerState, now: float, upper: KeyState | None
        ) -> tuple[Decision, bool]:
            shares = None
            if plan.fair_share:
                shares = self._fair.setdefault(request.integration, fair.FairState())
            return steps.acquire(state, breaker, now, upper, shares, plan, request, self._idle_ttl)

        self._plans[request.integration] = plan
        plan = self._bounded(request.integration, request.tenant, plan)
        return self._apply(request.integration, request.tenant, plan, step)

    def report(self, report: Report, plan: Plan) -> ReportResult:
        """See ``Backend.report``."""
        plan = self._bounded(report.integration, report.tenant, plan)

        def step(
            state: KeyState, breaker: brk.BreakerState, now: float, upper: KeyState | None
        ) -> tuple[ReportResult, bool]:
            return steps.report(state, breaker, now, upper, plan, report)

        return self._apply(report.integration, report.tenant, plan, step)

    # the asyncio side (``AsyncBackend``): the same calls, which wait for no I/O (the lock
    # is held for microseconds), so an event loop runs them directly

    async def aacquire(self, request: AcquireRequest, plan: Plan) -> Decision:
        return self.acquire(request, plan)

    async def areport(self, report: Report, plan: Plan) -> ReportResult:
        return self.report(report, plan)

    async def arelease(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        return self.release(integration, tenant, lease_id)

    async def acheck(self, integration: str, tenant: str | None) -> tuple[int, float] | None:
        return self.check(integration, tenant)

    async def acount(self, integration: str, event: str, tenant: str | None = None) -> None:
        self.count(integration, event, tenant)

    async def asnapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        return self.snapshot(integration, tenant, plan)

    def describe(self) -> str:
        """See ``Backend.describe``."""
        return "memory (this process only)"

    def release(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """See ``Backend.release``."""
        with self._lock:
            state = self._load((integration, tenant), self._clock())
            return state is not None and aimd.release(state, lease_id)

    def check(self, integration: str, tenant: str | None) -> tuple[int, float] | None:
        """See ``Backend.check``."""
        with self._lock:
            now = self._clock()
            state = self._load((integration, tenant), now)
            if state is None:
                return None
            until = state.cooldown_until
            upper = self._load(_app_key(integration), now)  # a chain's level holds it too
            if upper is not None:
                until = max(until, upper.cooldown_until)
            return state.epoch, max(0.0, until - now)

    def snapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        """See ``Backend.snapshot``."""
        plan = self._bounded(integration, tenant, plan)  # as its decisions see the key
        with self._lock:
            now = self._clock()
            breaker = self._breakers.get(integration) or brk.BreakerState()
            state = self._load((integration, tenant), now)
            return aimd.snapshot(state, breaker, now, plan.limits)

    def app_snapshot(self, integration: str, plan: Plan) -> Snapshot:
        """See ``Backend.app_snapshot``."""
        assert plan.app is not None
        with self._lock:
            now = self._clock()
            breaker = self._breakers.get(integration) or brk.BreakerState()
            state = self._load(_app_key(integration), now)
            return aimd.snapshot(state, breaker, now, plan.app.limits)

    def snapshots(
        self, integration: str, tenants: Sequence[str | None], plan: Plan
    ) -> list[Snapshot]:
        """See ``Backend.snapshots``."""
        with self._lock:
            now = self._clock()
            breaker = self._breakers.get(integration) or brk.BreakerState()
            return [
                aimd.snapshot(self._load((integration, tenant), now), breaker, now, plan.limits)
                for tenant in tenants
            ]

    def purge(self, integration: str) -> None:
        """See ``Backend.purge``."""
        with self._lock:
            for key in [key for key in self._keys if key[0] == integration]:
                del self._keys[key]
            self._keys.pop(_app_key(integration), None)
            self._fair.pop(integration, None)
            self._breakers.pop(integration, None)
            self._plans.pop(integration, None)
            self._overrides.pop(integration, None)

    def scan(self, integration: str | None = None) -> Iterator[tuple[str, str | None]]:
        """Every live key, of ``integration`` only when given (a list taken under the lock)."""
        with self._lock:
            now = self._clock()
            keys = [
                key
                for key, (_, expiry) in self._keys.items()
                if expiry > now
                and (integration is None or key[0] == integration)
                and not key[0].startswith("\0")
            ]
        return iter(keys)

    def reset(self, integration: str, tenant: str | None) -> None:
        """See ``Backend.reset``."""
        with self._lock:
            self._keys.pop((integration, tenant), None)
            if tenant is None:  # (with a chain's integration-wide level and fair shares)
                self._keys.pop(_app_key(integration), None)
                self._fair.pop(integration, None)

    def count(self, integration: str, event: str, tenant: str | None = None) -> None:
        """See ``Backend.count``."""
        with self._lock:
            state = self._load((integration, tenant), self._clock())
            if state is not None:
                steps.bump(state, event)

    def stats(self, integration: str) -> dict[str, int]:
        """See ``Backend.stats``."""
        totals: dict[str, int] = {}
        with self._lock:
            now = self._clock()
            for key in [key for key in self._keys if key[0] == integration]:
                state = self._load(key, now)  # (drops it when expired)
                for event, value in state.counts.items() if state else ():
                    totals[event] = totals.get(event, 0) + value
        return totals

    def stored_plan(self, integration: str) -> Plan | None:
        """See ``Backend.stored_plan``."""
        return self._plans.get(integration)

    def set_breaker(self, integration: str, state: str, open_seconds: float) -> None:
        """See ``Backend.set_breaker``."""
        with self._lock:
            breaker = brk.force(state, self._clock(), open_seconds)
            if breaker.is_default:
                self._breakers.pop(integration, None)
            else:
                self._breakers[integration] = breaker

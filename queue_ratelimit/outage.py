"""What the limiter does while its shared backend (Redis) is unreachable.

Each integration chooses with ``on_backend_error``:

* ``"closed"`` (the default): nothing is granted. ``acquire`` raises
  :class:`~queue_ratelimit.errors.BackendUnavailable`, which the task integrations turn into a
  requeue (never a failure, never counted against the requeue budget); reports of calls
  already made are dropped, since the call has happened and its answer still reaches the
  caller.
* ``"open"``: a process-local ``MemoryBackend`` decides instead, at ``1 / fallback_processes``
  of the configured rates, so a fleet of that many processes stays near the limit.

The first failure marks the backend down for ``probe_interval`` seconds: calls in that time
do not touch Redis at all (no connection storm, no crash loop); after it, one caller per
interval probes. When a probe succeeds, decisions are shared again, the local state is
dropped, and the concurrency leases given back meanwhile are released in Redis. One
``backend_unavailable`` and one ``backend_recovered`` signal per integration per outage.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from queue_ratelimit import signals
from queue_ratelimit.backends.base import Backend
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import BackendError, BackendUnavailable
from queue_ratelimit.plans import Prepared
from queue_ratelimit.policy.state import Plan

__all__ = ["OutageGuard", "local_plan"]

T = TypeVar("T")


def local_plan(plan: Plan, processes: int) -> Plan:
    """``plan`` with every limit's rates divided among ``processes``; bursts are kept, so
    any cost the shared limiter accepts is still possible locally."""
    if processes == 1:
        return plan
    share = 1.0 / processes
    limits = tuple(
        dataclasses.replace(
            lim, rate=lim.rate * share, min_rate=lim.min_rate * share, max_rate=lim.max_rate * share
        )
        for lim in plan.limits
    )
    return dataclasses.replace(plan, limits=limits)


class OutageGuard:
    """Routes each backend call to the shared backend, or, while it is down, to the
    integration's fallback: a local limiter or :class:`BackendUnavailable`.

    Args:
        primary: the shared backend.
        probe_interval: seconds between attempts to reach a backend that failed.
        clock: monotonic seconds; inject one in tests.
    """

    def __init__(
        self,
        primary: Backend,
        *,
        probe_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if probe_interval <= 0:
            raise ValueError("probe_interval must be > 0")
        self.primary = primary
        self.local = MemoryBackend()
        self.probe_interval = probe_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._announced: set[str] = set()
        self._cause: BaseException | None = None  # what the last failure was
        self._owed: collections.deque[tuple[str, str | None, str]] = collections.deque(
            maxlen=10_000
        )  # leases given back while the shared backend was down
        self._plans: dict[tuple[int, int], Plan] = {}

    @property
    def down(self) -> bool:
        """Whether the shared backend failed and has not answered since."""
        return self._down_since is not None

    def call(
        self,
        prepared: Prepared,
        tenant: str | None,
        op: Callable[[Backend, Plan], T],
        *,
        closed: Callable[[BackendUnavailable], T] | None = None,
        lease: str | None = None,
        fallback: bool = True,
    ) -> T:
        """Run ``op`` on the shared backend, or on the fallback while it is down.

        When the integration fails closed, ``closed`` supplies the answer (reports pass a
        neutral result); without it, :class:`BackendUnavailable` is raised. A ``lease``
        the op gives back while the shared backend is down is given back to it once it
        answers again (else it would hold a concurrency slot until its TTL). Without
        ``fallback`` (reading the shared state itself), the op never runs locally: it fails
        closed whatever the integration says.
        """
        config, plan = prepared.config, prepared.plan
        up = self._down_since is None  # the usual case: no lock, no clock (a stale read: one call)
        started = None if up else self._route()
        if up or started is not None:
            try:
                result = op(self.primary, plan)
            except BackendError as exc:
                self._failed(exc)
            else:
                if started is not None:  # a probe: its answer may end the outage
                    self._answered(config, tenant, started)
                return result
        self._announce(config, tenant)
        if lease is not None:
            self._owed.append((config.name, tenant, lease))
        if fallback and config.on_backend_error == "open":
            return op(self.local, self._local_plan(plan, config.fallback_processes))
        error = BackendUnavailable(
            f"{config.name}: the limiter backend is unavailable and on_backend_error is 'closed'",
            retry_after=self.probe_interval,
        )
        if closed is None:
            raise error from self._cause
        return closed(error)

    def _route(self) -> float | None:
        """While the shared backend is down, when to try it: the time the attempt starts,
        or None (use the fallback). One caller per ``probe_interval`` probes it."""
        now = self._clock()
        with self._lock:
            if self._down_since is None:
                return now
            if now >= self._next_probe:
                self._next_probe = now + self.probe_interval  # this caller is the probe
                return now
        return None

    def _local_plan(self, plan: Plan, processes: int) -> Plan:
        key = (id(plan), processes)
        cached = self._plans.get(key)
        if cached is None:
            cached = self._plans[key] = local_plan(plan, processes)
        return cached

    def _failed(self, exc: BackendError) -> None:
        now = self._clock()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
            self._cause = exc.__cause__ or exc
            self._next_probe = now + self.probe_interval

    def _announce(self, config: IntegrationConfig, tenant: str | None) -> None:
        with self._lock:
            if config.name in self._announced:
                return
            self._announced.add(config.name)
        cause = self._cause
        error = f"{type(cause).__name__}: {cause}" if cause is not None else "backend down"
        signals.emit(
            signals.backend_unavailable,
            self,
            integration=config.name,
            tenant=tenant,
            mode=config.on_backend_error,
            error=error,
        )

    def _answered(self, config: IntegrationConfig, tenant: str | None, started: float) -> None:
        """The shared backend answered a call that started at ``started``: if it was down
        before that call began, it is back (a call in flight since before the outage
        proves nothing)."""
        if self._down_since is None:  # the usual case: nothing to recover, no lock
            return
        with self._lock:
            since = self._down_since
            if since is None or started < since:
                return
            self._down_since = None
            announced, self._announced = self._announced, set()
            owed = list(self._owed)
            self._owed.clear()
            self.local = MemoryBackend()  # the shared state is the truth again
        for integration, lease_tenant, lease in owed:
            try:
                self.primary.release(integration, lease_tenant, lease)
            except BackendError:
                break  # down again: the leases expire by their TTL
        down_for = self._clock() - since
        for name in sorted(announced):
            signals.emit(
                signals.backend_recovered,
                self,
                integration=name,
                tenant=tenant if name == config.name else None,
                down_for=down_for,
            )

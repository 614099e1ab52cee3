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
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from queue_ratelimit import signals
from queue_ratelimit.backends.base import Backend, awaited
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import BackendError, BackendUnavailable
from queue_ratelimit.plans import Prepared
from queue_ratelimit.policy.state import LimitParams, Plan

__all__ = ["OutageGuard", "local_plan"]

T = TypeVar("T")


def local_plan(plan: Plan, processes: int) -> Plan:
    """``plan`` with every limit's rates divided among ``processes``; bursts are kept, so
    any cost the shared limiter accepts is still possible locally, but for a window's units,
    which are divided too (each process may otherwise spend a whole window): a call that
    costs more than a process's share of a window takes the whole share (``sliding``)."""
    if processes == 1:
        return plan
    share = 1.0 / processes
    limits = tuple(
        dataclasses.replace(
            lim,
            rate=lim.rate * share,
            min_rate=lim.min_rate * share,
            max_rate=lim.max_rate * share,
            # a window grants its units whatever the rate: each process its share (whole
            # units, of a sliding one)
            burst=lim.burst if lim.window == 0 else _share_of(lim, share),
        )
        for lim in plan.limits
    )
    app = None if plan.app is None else local_plan(plan.app, processes)  # (a chain's level)
    return dataclasses.replace(plan, limits=limits, app=app)


def _share_of(lim: LimitParams, share: float) -> float:
    """A window's units for one of the processes that share it (at least one)."""
    units = lim.burst * share
    return max(1.0, math.floor(units) if lim.window < 0 else units)


class _Shard:
    """The outage state of one shard (a Redis node, or the whole backend when it has one)."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.next_probe = 0.0
        self.announced: set[str] = set()
        self.cause: BaseException | None = None  # what the last failure was
        self.owed: collections.deque[tuple[str, str | None, str]] = collections.deque(
            maxlen=10_000
        )  # leases given back while the shard was down
        self.local = MemoryBackend()


class OutageGuard:
    """Routes each backend call to the shared backend, or, while the shard that holds the
    call's key is down, to the integration's fallback: a local limiter or
    :class:`BackendUnavailable`.

    A backend spread over shards (a Redis Cluster) tells the shard of a key with
    ``shard(integration, tenant)``: a dead or unreachable shard then sends only the keys it
    holds to their fallback, and each shard is probed and recovers on its own.

    Args:
        primary: the shared backend.
        probe_interval: seconds between attempts to reach a shard that failed.
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
        self.probe_interval = probe_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._shard_of: Callable[[str, str | None], str] = getattr(
            primary, "shard", lambda _integration, _tenant: ""
        )
        self._shards: dict[str, _Shard] = {}
        self._any_down = False  # read without the lock on the usual path
        self._plans: dict[tuple[int, int], Plan] = {}

    @property
    def down(self) -> bool:
        """Whether a shard of the shared backend failed and has not answered since."""
        return self._any_down

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
        """Run ``op`` on the shared backend, or on the fallback while its shard is down.

        When the integration fails closed, ``closed`` supplies the answer (reports pass a
        neutral result); without it, :class:`BackendUnavailable` is raised. A ``lease``
        the op gives back while the shard is down is given back to it once it answers
        again (else it would hold a concurrency slot until its TTL). Without ``fallback``
        (reading the shared state itself), the op never runs locally: it fails closed
        whatever the integration says.
        """
        config = prepared.config
        shard, started = self._enter(config.name, tenant)
        if shard is None or started is not None:
            try:
                result = op(self.primary, prepared.plan)
            except BackendError as exc:
                shard = self._failed(shard, config.name, tenant, exc)
            else:
                recovery = self._answered(shard, started)
                if recovery is not None:
                    for owed in recovery.owed:
                        try:
                            self.primary.release(*owed)
                        except BackendError:
                            break  # down again: the leases expire by their TTL
                    self._recovered(recovery, config, tenant)
                return result
        local = self._fallback(shard, prepared, tenant, lease, fallback, closed)
        return op(*local) if isinstance(local, tuple) else local.value

    async def acall(
        self,
        prepared: Prepared,
        tenant: str | None,
        op: Callable[[Backend, Plan], Awaitable[T]],
        *,
        closed: Callable[[BackendUnavailable], T] | None = None,
        lease: str | None = None,
        fallback: bool = True,
    ) -> T:
        """``call`` for an event loop: ``op`` returns an awaitable (on the shared backend or
        the local fallback), and leases owed since an outage are given back awaited."""
        config = prepared.config
        shard, started = self._enter(config.name, tenant)
        if shard is None or started is not None:
            try:
                result = await op(self.primary, prepared.plan)
            except BackendError as exc:
                shard = self._failed(shard, config.name, tenant, exc)
            else:
                recovery = self._answered(shard, started)
                if recovery is not None:
                    for owed in recovery.owed:
                        try:
                            await awaited(self.primary, "release", *owed)
                        except BackendError:
                            break
                    self._recovered(recovery, config, tenant)
                return result
        local = self._fallback(shard, prepared, tenant, lease, fallback, closed)
        return await op(*local) if isinstance(local, tuple) else local.value

    def _enter(self, integration: str, tenant: str | None) -> tuple[_Shard | None, float | None]:
        """The shard of the key when an outage is on (None: none is, the usual case: no
        lock, no clock; a stale read costs one call), and when this call may try it."""
        if not self._any_down:
            return None, None
        shard = self._shard(integration, tenant)
        return shard, self._route(shard)

    def _fallback(
        self,
        shard: _Shard,
        prepared: Prepared,
        tenant: str | None,
        lease: str | None,
        fallback: bool,
        closed: Callable[[BackendUnavailable], T] | None,
    ) -> tuple[Backend, Plan] | _Answer[T]:
        """Where a call goes while its shard is down: the local backend and plan to run it
        on, or (failing closed) the ``closed`` answer; raises ``BackendUnavailable``."""
        config = prepared.config
        self._announce(shard, config, tenant)
        if lease is not None:
            shard.owed.append((config.name, tenant, lease))
        if fallback and config.on_backend_error == "open":
            return shard.local, self._local_plan(prepared.plan, config.fallback_processes)
        error = BackendUnavailable(
            f"{config.name}: the limiter backend is unavailable and on_backend_error is 'closed'",
            retry_after=self.probe_interval,
        )
        if closed is None:
            raise error from shard.cause
        return _Answer(closed(error))

    def _shard(self, integration: str, tenant: str | None) -> _Shard:
        try:
            name = self._shard_of(integration, tenant)
        except BackendError:
            name = "?"  # the backend cannot tell now (its map of the cluster is gone)
        with self._lock:
            shard = self._shards.get(name)
            if shard is None:
                shard = self._shards[name] = _Shard()
            return shard

    def _route(self, shard: _Shard) -> float | None:
        """While the shard is down, when to try it: the time the attempt starts, or None
        (use the fallback). One caller per ``probe_interval`` probes it."""
        now = self._clock()
        with self._lock:
            if shard.down_since is None:
                return now
            if now >= shard.next_probe:
                shard.next_probe = now + self.probe_interval  # this caller is the probe
                return now
        return None

    def _local_plan(self, plan: Plan, processes: int) -> Plan:
        key = (id(plan), processes)
        cached = self._plans.get(key)
        if cached is None:
            cached = self._plans[key] = local_plan(plan, processes)
        return cached

    def _failed(
        self, shard: _Shard | None, integration: str, tenant: str | None, exc: BackendError
    ) -> _Shard:
        shard = shard or self._shard(integration, tenant)
        now = self._clock()
        with self._lock:
            if shard.down_since is None:
                shard.down_since = now
            shard.cause = exc.__cause__ or exc
            shard.next_probe = now + self.probe_interval
            self._any_down = True
        return shard

    def _announce(self, shard: _Shard, config: IntegrationConfig, tenant: str | None) -> None:
        with self._lock:
            if config.name in shard.announced:
                return
            shard.announced.add(config.name)
        cause = shard.cause
        error = f"{type(cause).__name__}: {cause}" if cause is not None else "backend down"
        signals.emit(
            signals.backend_unavailable,
            self,
            integration=config.name,
            tenant=tenant,
            mode=config.on_backend_error,
            error=error,
        )

    def _answered(self, shard: _Shard | None, started: float | None) -> _Recovery | None:
        """The shard answered a call that started at ``started``: if it was down before
        that call began, it is back (a call in flight since before the outage proves
        nothing): the leases owed to it, and what to announce."""
        if shard is None or started is None:
            return None
        with self._lock:
            since = shard.down_since
            if since is None or started < since:
                return None
            shard.down_since = None
            announced, shard.announced = shard.announced, set()
            owed = list(shard.owed)
            shard.owed.clear()
            shard.local = MemoryBackend()  # the shared state is the truth again
            self._any_down = any(each.down_since is not None for each in self._shards.values())
        return _Recovery(since, announced, owed)

    def _recovered(
        self, recovery: _Recovery, config: IntegrationConfig, tenant: str | None
    ) -> None:
        down_for = self._clock() - recovery.since
        for name in sorted(recovery.announced):
            signals.emit(
                signals.backend_recovered,
                self,
                integration=name,
                tenant=tenant if name == config.name else None,
                down_for=down_for,
            )


@dataclasses.dataclass(frozen=True)
class _Answer(Generic[T]):
    """A fallback's answer, as opposed to a backend to run the call on."""

    value: T


@dataclasses.dataclass(frozen=True)
class _Recovery:
    """A shard back after an outage: since when it was down, the integrations told of it,
    and the leases given back meanwhile."""

    since: float
    announced: set[str]
    owed: list[tuple[str, str | None, str]]

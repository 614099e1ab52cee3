"""Limiter state in Redis, shared by every worker: one EVALSHA per decision.

The rules live in ``lua/limiter.lua`` (the same as ``policy/``'s ``admission`` and ``aimd``).
Time is the Redis server's clock, so workers on hosts with skewed clocks agree. The key layout
(``redis_keys.py``) spreads an integration's tenants over 1,024 hash tags, so they spread over
the shards of a Redis Cluster, and a decision touches one slot; the integration's breaker, under
the integration's tag, reaches a decision as an argument. Keys expire once idle: ``idle_ttl``
(up to an eighth more) after their last cooldown, debt and lease; Redis keeps them
``remember_for`` longer, for the rates they learned (``climb.revive``).

This module holds the ops (acquire, report, release, check, count); the backend's other parts
each hold one concern: the script's arguments (``redis_args.py``), the breaker's view
(``redis_breaker.py``), the operators' tools (``redis_tools.py``: scan, read many keys, reset,
purge) and overrides (``redis_overrides.py``).

Arguments, state and answers are binary (``struct`` doubles, integer arrays), laid out in the
script's header: nothing is formatted or parsed as text per decision, on either side.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import re
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from queue_ratelimit.backends import redis_keys as layout
from queue_ratelimit.backends import redis_wire as wire
from queue_ratelimit.backends.base import REMEMBER_FOR, check_lifetimes
from queue_ratelimit.backends.redis_connect import (
    AsyncClient,
    Client,
    client_from_url,
    describe,
    timeout_warning,
)
from queue_ratelimit.backends.redis_overrides import COPY_TTL, RedisOverrides
from queue_ratelimit.backends.redis_steps import Steps
from queue_ratelimit.backends.redis_tools import RedisTools
from queue_ratelimit.errors import BackendError, ConfigError
from queue_ratelimit.policy import chain
from queue_ratelimit.policy.overrides import BoundedPlans
from queue_ratelimit.policy.state import (
    FAILURE,
    SUCCESS,
    AcquireRequest,
    Decision,
    Plan,
    Report,
    ReportResult,
    Reservation,
    Snapshot,
)

log = logging.getLogger("queue_ratelimit")
_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _script_source() -> str:
    return (importlib.resources.files(__package__) / "lua" / "limiter.lua").read_text("utf-8")


class RedisBackend(RedisOverrides, RedisTools):
    """Keeps limiter keys in Redis; a decision is one script call (one round trip).

    Args:
        client: a ``redis.Redis`` or ``redis.cluster.RedisCluster`` client (used as
            configured; a warning at start when it has no socket timeout), or a URL of any
            form ``redis_connect`` reads (``redis://``, ``rediss://``, ``unix://``,
            ``redis+cluster://``, ``redis+sentinel://``), for which a client failing fast is
            made: 1 s to connect, 2 s per reply, two quick retries.
        prefix: namespace of every key this backend writes (two apps sharing one Redis use
            different prefixes). Letters, digits and ``_.:-``.
        idle_ttl: seconds an idle key lives after its last cooldown, debt or lease (up to
            an eighth more: its expiry is moved only when it must, see ``limiter.lua``).
        remember_for: seconds past that for which Redis keeps the key for what it learned
            (its ``peak`` and served ceiling; about 250 bytes): a key used again in that
            time starts near them instead of at the configured start (0: forget at once).
        breaker_poll: seconds a process trusts its last read of an integration's breaker
            (opened elsewhere, it stops this process's grants within this time; a queue's
            breaker poll reads it afresh and refreshes it); at most a day (the copies of the
            overrides' version live a day after the last change).
        transient_retry: seconds a call retries a moving slot, a failover or a demoted
            master (``TRYAGAIN``, ``ASK``, ``CLUSTERDOWN``, ``READONLY``) before it counts
            as an outage.
        async_client: what the asyncio methods (``aacquire``, ..., which ``AsyncLimiter``
            calls) use: a URL or a ``redis.asyncio`` client. By default a client per event
            loop made from ``client`` when it is a URL, else from the blocking client's
            server (a Cluster or Sentinel client has no default: give a URL).
        clock: tests only: a clock to use instead of the server's ``TIME``.
    """

    def __init__(
        self,
        client: Client | str,
        *,
        prefix: str = "qrl",
        idle_ttl: float = 3600.0,
        remember_for: float = REMEMBER_FOR,
        breaker_poll: float = 1.0,
        transient_retry: float = 2.0,
        async_client: AsyncClient | str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise ConfigError(None, "prefix", prefix, "use 1-64 of letters, digits and _.:-")
        check_lifetimes(idle_ttl, remember_for)
        if not 0 <= breaker_poll <= COPY_TTL:
            raise ConfigError(
                None, "breaker_poll", breaker_poll, f"must be between 0 and {COPY_TTL} seconds"
            )
        if isinstance(client, str):
            async_client = async_client or client
            client = client_from_url(client)
        else:
            warning = timeout_warning(client)
            if warning:
                log.warning("queue_ratelimit: %s", warning)
        self.client: Client = client
        self.prefix = prefix
        self._idle_ttl = idle_ttl
        self._remember_for = remember_for
        self._breaker_poll = breaker_poll
        self._transient_retry = transient_retry
        self._clock = clock
        self._source = _script_source()
        self._sha = hashlib.sha1(self._source.encode()).hexdigest()
        self._init_args()
        self._views: dict[str, wire.View] = {}
        self._described: dict[str, tuple[float, str]] = {}  # integration -> (when, text)
        self._bounded_plans = BoundedPlans()
        self._init_async(async_client)

    def describe(self) -> str:
        """See ``Backend.describe``: the server (or cluster, or sentinels) and database, and
        the prefix."""
        return f"{describe(self.client)} (prefix {self.prefix})"

    def keys_for(self, integration: str, tenant: str | None) -> tuple[str, str, str, str]:
        """The Redis keys of one limiter key: state, leases, and the integration's breaker
        and description (``redis_keys`` tells the layout)."""
        names = self._names(integration, tenant)
        breaker, meta, _ = layout.integration_keys(self.prefix, integration)
        return (names.state, names.leases, breaker, meta)

    def shard(self, integration: str, tenant: str | None) -> str:
        """The node that holds the key (``host:port``) on a cluster; ``""`` otherwise (the
        outage guard keeps one outage state per shard)."""
        if not isinstance(self.client, RedisCluster):
            return ""
        try:
            slot = self.client.keyslot(self._names(integration, tenant).state)  # type: ignore[no-untyped-call]
            return str(self.client.nodes_manager.get_node_from_slot(slot).name)
        except (redis.RedisError, RedisClusterException) as exc:  # (a slot no node serves)
            raise BackendError(f"redis cluster map unavailable: {exc}") from exc

    # -- the operators' overrides (redis_overrides.py; their rules: policy/overrides.py) --

    def _bounded(self, plan: Plan, view: wire.View, tenant: str | None) -> Plan:
        """``plan`` within the overrides the view holds for the key."""
        return self._bounded_plans.bounded(plan, view.overrides, tenant)

    # -- the ops: each written once as steps, run by ``_drive`` or (asyncio) ``_adrive`` --

    def acquire(self, request: AcquireRequest, plan: Plan) -> Decision:
        """See ``Backend.acquire``."""
        return self._drive(self._acquire_steps(request, plan))

    def report(self, report: Report, plan: Plan) -> ReportResult:
        """See ``Backend.report``: the key's rates, then (for a failure, or a success while
        the breaker counts failures or is not closed) the integration's breaker."""
        return self._drive(self._report_steps(report, plan))

    def release(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """See ``Backend.release``."""
        return self._drive(self._release_steps(integration, tenant, lease_id))

    def check(self, integration: str, tenant: str | None) -> tuple[int, float] | None:
        """See ``Backend.check``: one small call."""
        return self._drive(self._check_steps(integration, tenant))

    def count(self, integration: str, event: str, tenant: str | None = None) -> None:
        """See ``Backend.count``."""
        self._drive(self._count_steps(integration, event, tenant))

    async def aacquire(self, request: AcquireRequest, plan: Plan) -> Decision:
        """``acquire`` on the running event loop's asyncio client."""
        return await self._adrive(self._acquire_steps(request, plan))

    async def areport(self, report: Report, plan: Plan) -> ReportResult:
        """``report`` on the running event loop's asyncio client."""
        return await self._adrive(self._report_steps(report, plan))

    async def arelease(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """``release`` on the running event loop's asyncio client."""
        return await self._adrive(self._release_steps(integration, tenant, lease_id))

    async def acheck(self, integration: str, tenant: str | None) -> tuple[int, float] | None:
        """``check`` on the running event loop's asyncio client."""
        return await self._adrive(self._check_steps(integration, tenant))

    async def acount(self, integration: str, event: str, tenant: str | None = None) -> None:
        """``count`` on the running event loop's asyncio client."""
        await self._adrive(self._count_steps(integration, event, tenant))

    async def asnapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        """``snapshot`` on the running event loop's asyncio client."""
        return await self._adrive(self._snapshot_steps(integration, tenant, plan))

    def _acquire_steps(self, request: AcquireRequest, plan: Plan) -> Steps[Decision]:
        integration = request.integration
        if plan.app is not None or integration in self._chained:
            self._note(integration, plan)
        breaker, probe = (wire.CLOSED, 0.0), None
        view = yield from self._current_view(integration, plan)
        unbounded = plan
        if view.overrides:
            plan = self._bounded(plan, view, request.tenant)
        if view.state != wire.CLOSED:
            breaker, probe = yield from self._admit(integration, plan)
        args = self._acquire_args(request, plan, breaker, view)
        reply = yield "acquire", integration, args
        if reply[0] == wire.STALE:  # an operator's override changed: read it, decide again
            view = yield from self._view_steps(integration, unbounded)
            plan = self._bounded(unbounded, view, request.tenant)
            reply = yield "acquire", integration, self._acquire_args(request, plan, breaker)
        reason, wait, epoch, now, seq, *reserved = reply
        app_epoch = None
        if plan.app is not None:
            app_epoch, *reserved = reserved
        granted = reason <= wire.LAST_GRANT
        if probe is not None and not granted:  # the probe goes to the next caller
            yield from self._breaker_steps("unprobe", integration, plan, wire.pack(probe))
        promise, recheck, tokens = None, None, None
        if granted and reserved:  # the tokens left, asked for
            tokens = tuple(left / wire.MICRO for left in reserved)
        elif reserved:
            slot, back, *marks = reserved
            promise = Reservation(
                epoch, slot / wire.MICRO, tuple(mark / wire.MICRO for mark in marks)
            )
            recheck = None if back < 0 else back / wire.MICRO
        return Decision(
            granted,
            wait / wire.MICRO,
            wire.REASONS[reason],
            epoch,
            promise,
            now / wire.MICRO,
            request.lease_id if granted and plan.max_concurrent else None,
            seq,
            recheck,
            tokens,
            app_epoch,
        )

    def _report_steps(self, report: Report, plan: Plan) -> Steps[ReportResult]:
        if plan.app is not None or report.integration in self._chained:
            self._note(report.integration, plan)
        view = yield from self._current_view(report.integration, plan)
        if view.overrides:  # (bounded as the acquire before it was)
            plan = self._bounded(plan, view, report.tenant)
        feedback = report.feedback
        numbers = [wire.opt(feedback.seq), wire.opt(report.epoch), wire.opt(report.retry_after)]
        for lim in plan.limits:
            remaining, reset_after = feedback.quotas.get(lim.name, (None, None))
            numbers += [
                feedback.adjust.get(lim.name, 0.0),
                wire.opt(remaining),
                wire.opt(reset_after),
            ]
        lease = report.lease_id or ""
        if plan.app is not None:  # a chain: the integration-wide level's epoch, its key
            numbers.append(wire.opt(report.app_epoch))
            blob = self._blob(report.kind, plan, wire.pack(numbers))
            names = self._names(report.integration, report.tenant)
            app = layout.app_key(self.prefix, report.integration)
            level = str(chain.LEVELS.index(chain.level_of(report, plan)) + 1)
            args: tuple[Any, ...] = (3, names.state, names.leases, app, blob)
            args += self._words(plan, lease, "", names.stored_name, level)
        else:
            blob = self._blob(report.kind, plan, wire.pack(numbers))
            args = self._key_args(
                report.integration, report.tenant, blob, lease, leases=bool(lease)
            )
        epoch_now, decreased, old, new, cool, *held = yield report.kind, report.integration, args
        changed = False
        if report.kind == FAILURE or (report.kind == SUCCESS and (view.state or view.failures)):
            outcome = wire.pack([1.0 if report.kind == SUCCESS else 0.0])
            view, changed_code, _ = yield from self._breaker_steps(
                "outcome", report.integration, plan, outcome
            )
            changed = changed_code == 1
        return ReportResult(
            epoch_now,
            decreased == 1,
            old / wire.MICRO,
            new / wire.MICRO,
            cool / wire.MICRO,
            wire.BREAKER_STATES[view.state],
            changed,
            exhausted=bool(held and held[0]),
        )

    def _release_steps(self, integration: str, tenant: str | None, lease_id: str) -> Steps[bool]:
        blob = self._blob("release", wire.NO_PLAN)
        args = self._key_args(integration, tenant, blob, lease_id, leases=True)
        (released,) = yield "release", integration, args
        return bool(released == 1)

    def _check_steps(self, integration: str, tenant: str | None) -> Steps[tuple[int, float] | None]:
        blob = self._blob("check", wire.NO_PLAN)
        if integration in self._chained:  # the integration-wide level's cooldown holds it too
            app = layout.app_key(self.prefix, integration)
            args: tuple[Any, ...] = (2, self._names(integration, tenant).state, app, blob)
        else:
            args = self._key_args(integration, tenant, blob)
        exists, epoch, cool = yield "check", integration, args
        return (int(epoch), cool / wire.MICRO) if exists else None

    def _count_steps(self, integration: str, event: str, tenant: str | None) -> Steps[None]:
        if event not in wire.EVENTS:
            raise ValueError(f"event must be one of {wire.EVENTS}, not {event!r}")
        word = str(wire.EVENTS.index(event) + 1)
        args = self._key_args(integration, tenant, self._blob("count", wire.NO_PLAN), word)
        yield "count", integration, args

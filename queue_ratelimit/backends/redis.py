"""Limiter state in Redis, shared by every worker: one EVALSHA per decision.

The rules live in ``lua/limiter.lua`` (the same as ``policy/aimd.py``). Time is the Redis
server's clock, so workers on hosts with skewed clocks agree. The key layout
(``redis_keys.py``) spreads an integration's tenants over 1,024 hash tags, so they spread over
the shards of a Redis Cluster, and a decision touches one slot; the integration's breaker, under
the integration's tag, reaches a decision as an argument (``_view``, ``_admit``). Keys expire once
idle: ``idle_ttl`` (up to an eighth more) after their last cooldown, debt and lease; Redis
keeps them ``remember_for`` longer, for the rates they learned (``aimd.revive``).

What the operator tools do (scan, read many keys, reset, purge) is in ``redis_tools.py``.

Arguments, state and answers are binary (``struct`` doubles, integer arrays), laid out in the
script's header: nothing is formatted or parsed as text per decision, on either side.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import re
import struct
import time
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


_KEY_CACHE = 4096  # key names kept per backend (tenants beyond it are encoded per call)
_ARGS_CACHE = 4096  # acquire arguments kept per backend (see acquire)
_META_EVERY = 300.0  # seconds between a process's writes of an integration's description


def _words(word: str, event: str, stored_name: str) -> tuple[str, ...]:
    """ARGV[2..4] as far as they are needed: the op's word, the event a refusal counts, the
    tenant's name the state keeps (limiter.lua's header)."""
    if stored_name:
        return (word, event, stored_name)
    if event:
        return (word, event)
    return (word,) if word else ()


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
        self._plans: dict[int, tuple[Plan, bytes]] = {}
        self._keys: dict[tuple[str, str | None, bool], layout.KeyNames] = {}
        self._chained: set[str] = set()  # integrations with an integration-wide level
        self._app_blobs: dict[int, tuple[Plan, bytes]] = {}
        self._fair_blobs: dict[tuple[int, str | None], tuple[Plan, bytes]] = {}
        # an acquire's keys and blob (and its event and stored name), by its request's fields
        self._acquires: dict[tuple[Any, ...], tuple[Plan, tuple[Any, ...], str, str]] = {}
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

    def _names(self, integration: str, tenant: str | None) -> layout.KeyNames:
        cached = (integration, tenant, integration in self._chained)
        names = self._keys.get(cached)
        if names is None:
            names = layout.key_names(self.prefix, integration, tenant, cached[2])
            if len(self._keys) < _KEY_CACHE:
                self._keys[cached] = names
        return names

    def note_plan(self, integration: str, plan: Plan) -> None:
        """What ``Limiter`` tells its backend of each integration it prepares: with a chain,
        the integration's tenants' keys are named under its tag, in every op (a release, a
        count or a check in a process that decided nothing yet included)."""
        self._note(integration, plan)

    def _note(self, integration: str, plan: Plan) -> None:
        """Remember whether ``integration`` is chained (its tenants' keys are named so)."""
        if plan.app is not None:
            self._chained.add(integration)
        elif plan.limits:
            self._chained.discard(integration)

    def _app_blob(self, plan: Plan) -> bytes:
        """A chain's integration-wide level as the script reads it (ARGV[5]): its limits."""
        cached = self._app_blobs.get(id(plan))
        if cached is not None and cached[0] is plan:
            return cached[1]
        assert plan.app is not None
        slow = 1 if plan.app.slow_start else 0  # its limits, and its own start phase
        packed = struct.pack("<BB", len(plan.app.limits), slow) + b"".join(
            wire.name_bytes(lim.name) + struct.pack("<7d", *wire.limit_numbers(lim))
            for lim in plan.app.limits
        )
        if len(self._app_blobs) > 1024:
            self._app_blobs.clear()
        self._app_blobs[id(plan)] = (plan, packed)
        return packed

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

    def _plan_bytes(self, plan: Plan) -> bytes:
        """The plan as the script reads it (after the head); packed once per plan."""
        cached = self._plans.get(id(plan))
        if cached is not None and cached[0] is plan:
            return cached[1]
        head = struct.pack(
            "<B10d",
            len(plan.limits),
            self._idle_ttl,
            self._remember_for,
            1.0 if plan.slow_start else 0.0,
            plan.cooldown_multiplier,
            plan.max_backoff,
            plan.max_quota_wait,
            plan.max_concurrent or 0,
            plan.lease_ttl,
            plan.breaker_threshold,
            plan.breaker_open_seconds,
        )
        packed = head + b"".join(
            wire.name_bytes(lim.name) + struct.pack("<7d", *wire.limit_numbers(lim))
            for lim in plan.limits
        )
        if len(self._plans) > 1024:
            self._plans.clear()
        self._plans[id(plan)] = (plan, packed)
        return packed

    def _blob(
        self, op: str, plan: Plan, numbers: bytes = b"", breaker: tuple[int, float] = (0, 0.0)
    ) -> bytes:
        """The script's ARGV[1]: op code, now, the breaker passed in, the plan and the op's
        numbers."""
        now = float(self._clock()) if self._clock else wire.NONE
        return wire.HEAD.pack(wire.OPS[op], now, *breaker) + self._plan_bytes(plan) + numbers

    def _key_args(
        self,
        integration: str,
        tenant: str | None,
        blob: bytes,
        word: str = "",
        leases: bool = False,
    ) -> tuple[Any, ...]:
        """EVALSHA's arguments after the digest for an op on a limiter key: its keys (the
        leases only when ``leases``), the blob and the op's word."""
        head, stored_name = self._key_head(integration, tenant, blob, leases)
        return head + _words(word, "", stored_name)

    def _key_head(
        self, integration: str, tenant: str | None, blob: bytes, leases: bool
    ) -> tuple[tuple[Any, ...], str]:
        """The key count, keys and blob of an op on a limiter key, and the tenant's name the
        state keeps (``""``: its key names it)."""
        names = self._names(integration, tenant)
        keys = (2, names.state, names.leases) if leases else (1, names.state)
        return (*keys, blob), names.stored_name

    # -- the integration's breaker ------------------------------------------------------

    def _breaker_steps(
        self, op: str, integration: str, plan: Plan, numbers: bytes = b"", word: str = ""
    ) -> Steps[tuple[wire.View, int, tuple[int, float]]]:
        """An op on the integration's breaker key: the view it leaves (kept), its answer,
        and the breaker's state and until before it."""
        breaker, meta, held = layout.integration_keys(self.prefix, integration)
        blob = self._blob(op, plan, numbers)
        if op == "view":
            args: tuple[Any, ...] = (3, breaker, meta, held, blob, word)
        else:
            args = (1, breaker, blob, word)
        state, failures, until, _now, answer, before, before_until, *pairs = yield (
            op,
            integration,
            args,
        )
        if op == "view":
            overrides, version = wire.overrides_from(pairs), wire.version_from(pairs)
        else:  # (what the last VIEW read)
            last = self._views.get(integration, wire.CLEAN)
            overrides, version = last.overrides, last.version
        view = wire.View(state, failures, until / wire.MICRO, time.monotonic(), overrides, version)
        self._views[integration] = view
        return view, answer, (before, before_until / wire.MICRO)

    def _breaker_op(
        self, op: str, integration: str, plan: Plan, numbers: bytes = b"", word: str = ""
    ) -> tuple[wire.View, int, tuple[int, float]]:
        return self._drive(self._breaker_steps(op, integration, plan, numbers, word))

    def _current_view(self, integration: str, plan: Plan) -> Steps[wire.View]:
        """The integration's breaker as a decision or a report is passed it: as last seen,
        read again when older than ``breaker_poll`` (this process may also be a fork that
        inherited an old view: RQ's work horse). While the breaker's shard does not answer,
        the last view holds until the next ``breaker_poll``."""
        view = self._views.get(integration, wire.CLEAN)
        if time.monotonic() - view.read < self._breaker_poll:
            return view
        try:
            return (yield from self._view_steps(integration, plan))
        except BackendError:
            view = self._views[integration] = view._replace(read=time.monotonic())
            return view

    def _view(self, integration: str, plan: Plan) -> wire.View:
        return self._drive(self._view_steps(integration, plan))

    def _view_steps(self, integration: str, plan: Plan) -> Steps[wire.View]:
        """The integration's breaker, read now (and kept); the read also writes the
        integration's description for the tools every few minutes."""
        word = ""
        if plan.limits:
            described = wire.plan_json(plan, self._idle_ttl)
            when, last = self._described.get(integration, (float("-inf"), ""))
            if described != last or time.monotonic() - when > _META_EVERY:
                word = described
                self._described[integration] = (time.monotonic(), described)
        return (yield from self._breaker_steps("view", integration, plan, word=word))[0]

    def _admit(
        self, integration: str, plan: Plan
    ) -> Steps[tuple[tuple[int, float], tuple[float, float, float] | None]]:
        """The breaker an acquire is passed while the breaker is not closed (the verdict of
        an ADMIT on its key), and when this caller took the probe, what gives it back."""
        view, answer, before = yield from self._breaker_steps("admit", integration, plan)
        if answer == 0:
            return (wire.CLOSED, 0.0), None
        if answer == 1:
            return (view.state, view.until), None
        return (wire.HALF_OPEN, 0.0), (before[0], before[1], view.until)

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

    def _acquire_args(
        self,
        request: AcquireRequest,
        plan: Plan,
        breaker: tuple[int, float],
        view: wire.View | None = None,
    ) -> tuple[Any, ...]:
        """EVALSHA's arguments for ``request``; with ``view``, the view's version to check
        (``wire.STALE``) against the overrides hash, or its copy in the tenant's shard."""
        args = self._decision_args(request, plan, breaker)
        if view is None:
            return args
        held = self._names(request.integration, request.tenant).version
        count, rest = args[0], args[1:]
        keys, argv = rest[:count], rest[count:]
        words = (*argv, *([""] * (7 - len(argv))), view.version or "0")
        if held.endswith(layout.VERSION):  # a shard's copy: kept (redis_overrides.py)
            words += (COPY_TTL,)
        return (count + 1, *keys, held, *words)

    def _decision_args(
        self, request: AcquireRequest, plan: Plan, breaker: tuple[int, float]
    ) -> tuple[Any, ...]:
        """EVALSHA's arguments for ``request``. Without a reservation, with the breaker
        closed (and on the server's clock) they are the same for every call of one key,
        plan, wait bounds and cost: built once and kept."""
        reservation, costs = request.reservation, request.costs
        key = None
        if reservation is None and not self._clock and len(plan.limits) == 1 and not breaker[0]:
            cost = costs.get(plan.limits[0].name, 0.0)
            key = (
                request.integration,
                request.tenant,
                id(plan),
                request.max_wait,
                request.reserve,
                request.cooldown_wait,
                request.max_sleepers,
                request.refusal_event,
                request.tokens,
                cost,
            )
            kept = self._acquires.get(key)
            if kept is not None and kept[0] is plan:  # ``plan`` kept alive: its id is its own
                return kept[1] + self._words(
                    plan,
                    request.lease_id or "",
                    kept[2],
                    kept[3],
                    acquire=True,
                    tenant=request.tenant,
                )
        held = (reservation.epoch, reservation.slot) if reservation else (wire.NONE, wire.NONE)
        flags = (1.0 if request.reserve else 0.0) + (2.0 if request.tokens else 0.0)
        numbers = [request.max_wait, flags, *held]
        numbers += [wire.opt(request.cooldown_wait), wire.opt(request.max_sleepers)]
        numbers += [costs.get(lim.name, 0.0) for lim in plan.limits]
        if reservation and len(reservation.due) >= len(plan.limits):
            numbers += reservation.due
        blob = self._blob("acquire", plan, wire.pack(numbers), breaker)
        event = str(wire.EVENTS.index(request.refusal_event) + 1) if request.refusal_event else ""
        names = self._names(request.integration, request.tenant)
        if plan.app is not None:  # a chain: the integration-wide level's key too
            app = layout.app_key(self.prefix, request.integration)
            head: tuple[Any, ...] = (3, names.state, names.leases, app, blob)
            if plan.fair_share:  # and fair share's
                shares, active = layout.fair_keys(self.prefix, request.integration)
                head = (5, names.state, names.leases, app, shares, active, blob)
        elif plan.max_concurrent:
            head = (2, names.state, names.leases, blob)
        else:
            head = (1, names.state, blob)
        if key is not None:  # (the lease id is new on every acquire: kept apart)
            if len(self._acquires) >= _ARGS_CACHE:
                self._acquires.clear()
            self._acquires[key] = (plan, head, event, names.stored_name)
        return head + self._words(
            plan,
            request.lease_id or "",
            event,
            names.stored_name,
            acquire=True,
            tenant=request.tenant,
        )

    def _fair_blob(self, plan: Plan, tenant: str | None) -> bytes:
        """Fair share's ARGV[7]: the tenant and its weight, then the weighted tenants (kept
        per plan and tenant, as the key names are)."""
        cached = self._fair_blobs.get((id(plan), tenant))
        if cached is not None and cached[0] is plan:
            return cached[1]
        weights = dict(plan.weights)
        packed = wire.name_bytes(layout.member(tenant)) + struct.pack(
            "<dd", weights.get(tenant, 1.0) if tenant is not None else 1.0, len(weights)
        )
        packed += b"".join(
            wire.name_bytes(layout.member(other)) + struct.pack("<d", weight)
            for other, weight in plan.weights
        )
        if len(self._fair_blobs) >= _KEY_CACHE:
            self._fair_blobs.clear()
        self._fair_blobs[(id(plan), tenant)] = (plan, packed)
        return packed

    def _words(
        self,
        plan: Plan,
        word: str,
        event: str,
        stored_name: str,
        level: str = "",
        *,
        acquire: bool = False,
        tenant: str | None = None,
    ) -> tuple[str | bytes, ...]:
        """ARGV[2..]: ``_words``, then for a chain its integration-wide level's limits, the
        level a backoff lowers (a report's) and, for an ``acquire`` of ``tenant``'s key, fair
        share's blob."""
        if plan.app is None:
            return _words(word, event, stored_name)
        words: tuple[str | bytes, ...] = (word, event, stored_name, self._app_blob(plan), level)
        if acquire and plan.fair_share:
            words += (self._fair_blob(plan, tenant),)
        return words

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

    def set_breaker(self, integration: str, state: str, open_seconds: float) -> None:
        """See ``Backend.set_breaker``."""
        if state not in ("open", "closed"):
            raise ValueError(f"breaker state must be 'open' or 'closed', not {state!r}")
        self._breaker_op("breaker", integration, wire.NO_PLAN, wire.pack([open_seconds]), state)

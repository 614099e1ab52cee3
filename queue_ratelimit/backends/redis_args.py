"""The script's arguments for each op of ``RedisBackend``: key names (``redis_keys``), the
packed plan, numbers and words (``redis_wire``), each kept once built where it repeats
(a plan's bytes per plan, an acquire's keys and blob per request shape, key names per key).

``RedisArgs`` is the lowest part of ``RedisBackend`` (``redis.py``): the breaker's view
(``redis_breaker.py``), the tools and the decisions build on it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from queue_ratelimit.backends import redis_keys as layout
from queue_ratelimit.backends import redis_wire as wire
from queue_ratelimit.backends.redis_overrides import COPY_TTL
from queue_ratelimit.backends.redis_steps import ScriptRunner
from queue_ratelimit.policy.state import AcquireRequest, Plan

__all__ = ["RedisArgs"]

_KEY_CACHE = 4096  # key names kept per backend (tenants beyond it are encoded per call)
_ARGS_CACHE = 4096  # acquire arguments kept per backend (see acquire)


def _words(word: str, event: str, stored_name: str) -> tuple[str, ...]:
    """ARGV[2..4] as far as they are needed: the op's word, the event a refusal counts, the
    tenant's name the state keeps (limiter.lua's header)."""
    if stored_name:
        return (word, event, stored_name)
    if event:
        return (word, event)
    return (word,) if word else ()


class RedisArgs(ScriptRunner):
    """Builds the script's arguments (see the module)."""

    prefix: str
    _idle_ttl: float
    _remember_for: float
    _clock: Callable[[], float] | None

    def _init_args(self) -> None:
        """The kept names and arguments, empty."""
        self._plans: dict[int, tuple[Plan, bytes]] = {}
        self._keys: dict[tuple[str, str | None, bool], layout.KeyNames] = {}
        self._chained: set[str] = set()  # integrations with an integration-wide level
        self._app_blobs: dict[int, tuple[Plan, bytes]] = {}
        self._fair_blobs: dict[tuple[int, str | None], tuple[Plan, bytes]] = {}
        # an acquire's keys and blob (and its event and stored name), by its request's fields
        self._acquires: dict[tuple[Any, ...], tuple[Plan, tuple[Any, ...], str, str]] = {}

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
        if held.endswith(layout.COPY):  # a shard's copy: kept (redis_overrides.py)
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

"""Limiter state in Redis, shared by every worker: one EVALSHA per decision.

The rules live in ``lua/limiter.lua`` (the same as ``policy/aimd.py``). Time is the Redis
server's clock, so workers on hosts with skewed clocks agree. A key's Redis keys share one
hash tag per integration, ``{prefix:integration}``, so they sit in one Redis Cluster slot
(with the integration's other keys) and one script may touch them all. Keys expire once
idle: ``idle_ttl`` (up to an eighth more) after their last cooldown, debt and lease.

Arguments, state and answers are binary (``struct`` doubles, integer arrays), laid out in the
script's header: nothing is formatted or parsed as text per decision, on either side.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from queue_ratelimit.errors import BackendError, ConfigError
from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy.aimd import fresh_views
from queue_ratelimit.policy.state import (
    AcquireRequest,
    Decision,
    LimitSnapshot,
    Plan,
    Report,
    ReportResult,
    Reservation,
    Snapshot,
)

_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_MAX_TENANT_KEY = 128


def _script_source() -> str:
    return (importlib.resources.files(__package__) / "lua" / "limiter.lua").read_text("utf-8")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_NONE = float("nan")  # "none" among the script's numbers


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _opt(value: float | None) -> float:
    return _NONE if value is None else value


def _pack(numbers: Sequence[float]) -> bytes:
    """An op's numbers as the script reads them: little-endian doubles."""
    return struct.pack(f"<{len(numbers)}d", *numbers)  # struct caches the compiled format


def _name(text: str) -> bytes:
    return text.encode() + b"\0"  # the script's 's': zero-terminated


_MICRO = 1_000_000
_NO_PLAN = Plan(limits=())
# key suffixes, named for the layouts of limiter.lua, which other versions do not read (0.1
# kept msgpack and a hash; the state's layout 2 ran on main before 3): a fleet that mixes
# versions never has them overwrite each other's state, each just keeps its own
_STATE, _BREAKER = ":state.v3", ":breaker.v2"
_KEY_CACHE = 4096  # key names kept per backend (tenants beyond it are encoded per call)
_ARGS_CACHE = 4096  # acquire arguments kept per backend (see acquire)
# per op: its code in the script (ACQUIRE .. COUNT) and how many of its KEYS it is passed
_OPS = {
    "acquire": (1, 2),  # 3 with a concurrency limit (the leases)
    "success": (2, 2),  # 3 with a lease to give back
    "backoff": (3, 4),
    "failure": (4, 2),  # 3 with a lease to give back
    "release": (5, 3),
    "snapshot": (6, 3),
    "breaker": (7, 2),
    "count": (8, 4),
}
_HEAD = struct.Struct("<Bd")  # op code, now (NaN: the server's TIME)
# the script's reply codes (limiter.lua OK .. BREAKER_OPEN, and CLOSED, OPEN, HALF_OPEN)
REASONS = ("ok", "redeemed", "probe", "rate", "cooldown", "concurrency", "breaker_open")
_LAST_GRANT = 2  # the reasons up to "probe" are grants
BREAKER_STATES = (brk.CLOSED, brk.OPEN, brk.HALF_OPEN)

Keys = tuple[str, str, str, str]


class RedisBackend:
    """Keeps limiter keys in Redis; every method is one script call (one round trip).

    Args:
        client: a ``redis.Redis`` client (used as configured), or a ``redis://`` URL, for
            which a client failing fast is made: 1 s to connect, 2 s per reply, two quick
            retries, so a worker learns within seconds, not tens of seconds, that Redis is down.
        prefix: namespace of every key this backend writes (two apps sharing one Redis use
            different prefixes). Letters, digits and ``_.:-``.
        idle_ttl: seconds an idle key lives after its last cooldown, debt or lease (up to
            an eighth more: its expiry is moved only when it must, see ``limiter.lua``).
        clock: tests only: a clock to use instead of the server's ``TIME``.
    """

    def __init__(
        self,
        client: redis.Redis | str,
        *,
        prefix: str = "qrl",
        idle_ttl: float = 3600.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            raise ConfigError(None, "prefix", prefix, "use 1-64 of letters, digits and _.:-")
        if not idle_ttl > 0:
            raise ConfigError(None, "idle_ttl", idle_ttl, "must be > 0 seconds")
        if isinstance(client, str):
            client = redis.Redis.from_url(
                client,
                socket_connect_timeout=1.0,
                socket_timeout=2.0,
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
            )
        self.client = client
        self.prefix = prefix
        self._idle_ttl = idle_ttl
        self._clock = clock
        self._source = _script_source()
        self._sha = hashlib.sha1(self._source.encode()).hexdigest()
        self._plans: dict[int, tuple[Plan, bytes]] = {}
        self._keys: dict[tuple[str, str | None], Keys] = {}  # in the script's order
        self._acquires: dict[tuple[Any, ...], tuple[Plan, tuple[Any, ...]]] = {}

    def describe(self) -> str:
        """See ``Backend.describe``: the server and database, and the prefix."""
        kwargs = self.client.connection_pool.connection_kwargs
        scheme = "unix" if "path" in kwargs else "redis"
        where = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        return f"{scheme}://{where}/{kwargs.get('db', 0)} (prefix {self.prefix})"

    def keys_for(self, integration: str, tenant: str | None) -> Keys:
        """The Redis keys of one limiter key: state, leases, and the integration's breaker
        and event counts.

        A tenant is percent-encoded (so ``:``, ``{``, ``}`` and spaces cannot reach into
        another key's name) and replaced by its SHA-256 when long.
        """
        state, breaker, leases, stats = self._script_keys(integration, tenant)
        return state, leases, breaker, stats

    def _script_keys(self, integration: str, tenant: str | None) -> Keys:
        """``keys_for`` in the script's order (state, breaker, leases, stats), cached."""
        keys = self._keys.get((integration, tenant))
        if keys is not None:
            return keys
        base = tag = f"{{{self.prefix}:{integration}}}"
        if tenant is not None:
            part = quote(tenant, safe="")
            if len(part) > _MAX_TENANT_KEY:
                part = "#" + hashlib.sha256(tenant.encode()).hexdigest()
            base += f":t={part}"
        keys = base + _STATE, tag + _BREAKER, base + ":leases", tag + ":stats"
        if len(self._keys) < _KEY_CACHE:
            self._keys[(integration, tenant)] = keys
        return keys

    def scan(self, integration: str | None = None) -> Iterator[tuple[str, str | None]]:
        """Every limiter key in Redis under this prefix: ``(integration, tenant)`` pairs.

        A tenant stored by its digest (over 128 characters once encoded) is listed as
        ``#<sha256>``; the key exists but its raw name cannot be recovered.
        """
        head = f"{{{self.prefix}:"
        pattern = f"{head}{integration}}}:*" if integration else f"{head}*"
        try:
            for raw in self.client.scan_iter(match=pattern, count=1000):
                key = _text(raw)
                if not key.endswith(_STATE):
                    continue
                name, _, rest = key[len(head) :].partition("}")
                part = rest[len(":t=") : -len(_STATE)] if rest.startswith(":t=") else None
                if part is None:
                    yield name, None
                else:
                    yield name, part if part.startswith("#") else unquote(part)
        except redis.RedisError as exc:
            raise BackendError(f"redis scan failed: {exc}") from exc

    def _plan_bytes(self, plan: Plan) -> bytes:
        """The plan as the script reads it (after the op and time); packed once per plan."""
        cached = self._plans.get(id(plan))
        if cached is not None and cached[0] is plan:
            return cached[1]
        head = struct.pack(
            "<B7d",
            len(plan.limits),
            self._idle_ttl,
            plan.cooldown_multiplier,
            plan.max_backoff,
            plan.max_concurrent or 0,
            plan.lease_ttl,
            plan.breaker_threshold,
            plan.breaker_open_seconds,
        )
        wire = head + b"".join(
            _name(lim.name)
            + struct.pack(
                "<6d", lim.rate, lim.burst, lim.min_rate, lim.max_rate, lim.increase, lim.decrease
            )
            for lim in plan.limits
        )
        if len(self._plans) > 1024:
            self._plans.clear()
        self._plans[id(plan)] = (plan, wire)
        return wire

    def _call(
        self,
        op: str,
        integration: str,
        tenant: str | None,
        plan: Plan,
        numbers: bytes = b"",
        word: str = "",
    ) -> Any:
        """One EVALSHA of ``op`` with the op's packed ``numbers`` and ``word``."""
        blob = self._blob(op, plan, numbers)
        return self._run(op, integration, self._args(op, integration, tenant, plan, blob, word))

    def _blob(self, op: str, plan: Plan, numbers: bytes) -> bytes:
        """The script's ARGV[1]: op code, now, the plan and the op's numbers."""
        now = float(self._clock()) if self._clock else _NONE
        return _HEAD.pack(_OPS[op][0], now) + self._plan_bytes(plan) + numbers

    def _args(
        self,
        op: str,
        integration: str,
        tenant: str | None,
        plan: Plan,
        blob: bytes,
        word: str,
        counts: bool = False,
    ) -> tuple[Any, ...]:
        """EVALSHA's arguments: the script, its keys for ``op`` (all four with ``counts``),
        ``blob`` and ``word``."""
        passed = _OPS[op][1]
        if (op == "acquire" and plan.max_concurrent) or (word and op in ("success", "failure")):
            passed = 3  # and the leases
        if counts:
            passed = 4
        keys = self._script_keys(integration, tenant)[:passed]
        return (self._sha, passed, *keys, blob, word) if word else (self._sha, passed, *keys, blob)

    def _run(self, op: str, integration: str, args: tuple[Any, ...]) -> Any:
        """One EVALSHA; the script is loaded when the server lacks it."""
        try:
            try:
                return self.client.evalsha(*args)
            except NoScriptError:  # a new or restarted server, or SCRIPT FLUSH
                self.client.script_load(self._source)
                return self.client.evalsha(*args)
        except redis.RedisError as exc:
            raise BackendError(f"redis {op} failed for {integration!r}: {exc}") from exc

    def acquire(self, request: AcquireRequest, plan: Plan) -> Decision:
        """See ``Backend.acquire``."""
        args = self._acquire_args(request, plan)
        if request.refusal_event:  # ARGV[2] the lease (or none), ARGV[3] the event
            args += (request.lease_id or "", request.refusal_event)
        elif request.lease_id:
            args += (request.lease_id,)
        reply = self._run("acquire", request.integration, args)
        reason, wait, epoch, now, seq, *reserved = reply
        granted = reason <= _LAST_GRANT
        promise, recheck = None, None
        if reserved:
            slot, back, *marks = reserved
            promise = Reservation(epoch, slot / _MICRO, tuple(mark / _MICRO for mark in marks))
            recheck = None if back < 0 else back / _MICRO
        return Decision(
            granted,
            wait / _MICRO,
            REASONS[reason],
            epoch,
            promise,
            now / _MICRO,
            request.lease_id if granted and plan.max_concurrent else None,
            seq,
            recheck,
        )

    def _acquire_args(self, request: AcquireRequest, plan: Plan) -> tuple[Any, ...]:
        """EVALSHA's arguments for ``request``. Without a reservation (and on the server's
        clock) they are the same for every call of one key, plan, wait bounds and cost:
        built once and kept."""
        reservation, costs = request.reservation, request.costs
        key = None
        if reservation is None and not self._clock and len(plan.limits) == 1:
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
                cost,
            )
            kept = self._acquires.get(key)
            if kept is not None and kept[0] is plan:  # ``plan`` kept alive: its id is its own
                return kept[1]
        held = (reservation.epoch, reservation.slot) if reservation else (_NONE, _NONE)
        numbers = [request.max_wait, request.reserve, *held]
        numbers += [_opt(request.cooldown_wait), _opt(request.max_sleepers)]
        numbers += [costs.get(lim.name, 0.0) for lim in plan.limits]
        if reservation and len(reservation.due) == len(plan.limits):
            numbers += reservation.due
        blob = self._blob("acquire", plan, _pack(numbers))
        counts = request.refusal_event is not None  # KEYS[4]; KEYS[3] unread without leases
        args = self._args("acquire", request.integration, request.tenant, plan, blob, "", counts)
        if key is not None:
            if len(self._acquires) >= _ARGS_CACHE:
                self._acquires.clear()
            self._acquires[key] = (plan, args)
        return args

    def report(self, report: Report, plan: Plan) -> ReportResult:
        """See ``Backend.report``."""
        feedback = report.feedback
        numbers = [_opt(feedback.seq), _opt(report.epoch), _opt(report.retry_after)]
        for lim in plan.limits:
            remaining, reset_after = feedback.quotas.get(lim.name, (None, None))
            numbers += [feedback.adjust.get(lim.name, 0.0), _opt(remaining), _opt(reset_after)]
        reply = self._call(
            report.kind,
            report.integration,
            report.tenant,
            plan,
            _pack(numbers),
            report.lease_id or "",
        )
        epoch_now, decreased, old, new, cool, breaker, changed = reply
        return ReportResult(
            epoch_now,
            decreased == 1,
            old / _MICRO,
            new / _MICRO,
            cool / _MICRO,
            BREAKER_STATES[breaker],
            changed == 1,
        )

    def release(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """See ``Backend.release``."""
        (released,) = self._call("release", integration, tenant, _NO_PLAN, word=lease_id)
        return bool(released == 1)

    def snapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        """See ``Backend.snapshot``."""
        reply = self._call("snapshot", integration, tenant, plan)
        now = reply[1] / _MICRO
        breaker = (BREAKER_STATES[reply[2]], int(reply[3]), reply[4] / _MICRO)
        if reply[0] != 1:
            return Snapshot(False, 0, 0.0, 0, now, fresh_views(plan.limits), *breaker)
        views = []
        rest = reply[8:]
        for i in range(0, len(rest), 3):
            tokens = rest[i + 2] / _MICRO
            views.append(
                LimitSnapshot(_text(rest[i]), rest[i + 1] / _MICRO, tokens, max(0.0, -tokens))
            )
        epoch, cool, leases = reply[5], reply[6] / _MICRO, reply[7]
        return Snapshot(True, epoch, cool, leases, now, tuple(views), *breaker)

    def reset(self, integration: str, tenant: str | None) -> None:
        """See ``Backend.reset``."""
        try:
            self.client.delete(*self.keys_for(integration, tenant)[:2])
        except redis.RedisError as exc:
            raise BackendError(f"redis reset failed for {integration!r}: {exc}") from exc

    def purge(self, integration: str) -> None:
        """See ``Backend.purge``: every key under the integration's hash tag."""
        try:
            match = f"{{{self.prefix}:{integration}}}:*"
            for batch in _batches(self.client.scan_iter(match=match, count=1000), 500):
                self.client.delete(*batch)
        except redis.RedisError as exc:
            raise BackendError(f"redis purge failed for {integration!r}: {exc}") from exc

    def count(self, integration: str, event: str) -> None:
        """See ``Backend.count``."""
        self._call("count", integration, None, _NO_PLAN, word=event)

    def stats(self, integration: str) -> dict[str, int]:
        """See ``Backend.stats``."""
        try:
            raw: Mapping[Any, Any] = self.client.hgetall(self.keys_for(integration, None)[3])  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise BackendError(f"redis stats failed for {integration!r}: {exc}") from exc
        return {_text(k): int(v) for k, v in raw.items()}

    def set_breaker(self, integration: str, state: str, open_seconds: float) -> None:
        """See ``Backend.set_breaker``."""
        if state not in ("open", "closed"):
            raise ValueError(f"breaker state must be 'open' or 'closed', not {state!r}")
        self._call("breaker", integration, None, _NO_PLAN, _pack([open_seconds]), state)

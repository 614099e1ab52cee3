"""Limiter state in Redis, shared by every worker: one EVALSHA per decision.

The rules live in ``lua/limiter.lua`` (the same as ``policy/aimd.py``). Time is the Redis
server's clock, so workers on hosts with skewed clocks agree. A key's Redis keys share one
hash tag per integration, ``{prefix:integration}``, so they sit in one Redis Cluster slot
(with the integration's other keys) and one script may touch them all. Keys expire once
idle: ``idle_ttl`` after their last cooldown, debt and lease.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, unquote

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from queue_ratelimit.errors import BackendError, ConfigError
from queue_ratelimit.policy.aimd import fresh_views
from queue_ratelimit.policy.state import (
    Decision,
    Feedback,
    LimitSnapshot,
    Plan,
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


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _word(value: float | None) -> str:
    """One word of the script's argument string: a number, or "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


_MICRO = 1_000_000
_NO_PLAN = Plan(limits=())


class RedisBackend:
    """Keeps limiter keys in Redis; every method is one script call (one round trip).

    Args:
        client: a ``redis.Redis`` client (used as configured), or a ``redis://`` URL, for
            which a client failing fast is made: 1 s to connect, 2 s per reply, two quick
            retries, so a worker learns within seconds, not tens of seconds, that Redis is down.
        prefix: namespace of every key this backend writes (two apps sharing one Redis use
            different prefixes). Letters, digits and ``_.:-``.
        idle_ttl: seconds an idle key lives after its last cooldown, debt or lease.
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
        self._script = client.register_script(_script_source())
        self._plans: dict[int, tuple[Plan, str]] = {}

    def keys_for(self, integration: str, tenant: str | None) -> tuple[str, str, str, str]:
        """The Redis keys of one limiter key: state, leases, and the integration's breaker
        and event counts.

        A tenant is percent-encoded (so ``:``, ``{``, ``}`` and spaces cannot reach into
        another key's name) and replaced by its SHA-256 when long.
        """
        base = tag = f"{{{self.prefix}:{integration}}}"
        if tenant is not None:
            part = quote(tenant, safe="")
            if len(part) > _MAX_TENANT_KEY:
                part = "#" + hashlib.sha256(tenant.encode()).hexdigest()
            base += f":t={part}"
        return base + ":state", base + ":leases", tag + ":breaker", tag + ":stats"

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
                if not key.endswith(":state"):
                    continue
                name, _, rest = key[len(head) :].partition("}")
                part = rest[len(":t=") : -len(":state")] if rest.startswith(":t=") else None
                if part is None:
                    yield name, None
                else:
                    yield name, part if part.startswith("#") else unquote(part)
        except redis.RedisError as exc:
            raise BackendError(f"redis scan failed: {exc}") from exc

    def _plan_json(self, plan: Plan) -> str:
        """The plan as the script reads it; encoded once per plan object."""
        cached = self._plans.get(id(plan))
        if cached is not None and cached[0] is plan:
            return cached[1]
        limits = [
            [lim.name, lim.rate, lim.burst, lim.min_rate, lim.max_rate, lim.increase, lim.decrease]
            for lim in plan.limits
        ]
        wire = json.dumps(
            [
                self._idle_ttl,
                plan.cooldown_multiplier,
                plan.max_backoff,
                plan.max_concurrent or 0,
                plan.lease_ttl,
                plan.breaker_threshold,
                plan.breaker_open_seconds,
                limits,
            ]
        )
        if len(self._plans) > 1024:
            self._plans.clear()
        self._plans[id(plan)] = (plan, wire)
        return wire

    def _call(
        self, op: str, integration: str, tenant: str | None, plan: Plan, words: list[str]
    ) -> Any:
        now = _num(self._clock()) if self._clock else ""
        try:
            return self._script(
                keys=self.keys_for(integration, tenant),
                args=[op, now, self._plan_json(plan), " ".join(words)],
            )
        except redis.RedisError as exc:
            raise BackendError(f"redis {op} failed for {integration!r}: {exc}") from exc

    def acquire(
        self,
        integration: str,
        tenant: str | None,
        plan: Plan,
        costs: Mapping[str, float],
        *,
        max_wait: float,
        reserve: bool,
        reservation: Reservation | None,
        lease_id: str | None,
        cooldown_wait: float | None = None,
        max_sleepers: int | None = None,
    ) -> Decision:
        """See ``Backend.acquire``."""
        words = [
            _word(max_wait),
            "1" if reserve else "0",
            _word(reservation.epoch if reservation else None),
            _word(reservation.slot if reservation else None),
            lease_id or "-",
            _word(cooldown_wait),
            _word(max_sleepers),
        ]
        words += [_word(costs.get(lim.name, 0.0)) for lim in plan.limits]
        dues = reservation.due if reservation else ()
        words += [_word(due) for due in dues] if len(dues) == len(plan.limits) else []
        reply = self._call("acquire", integration, tenant, plan, words)
        granted, wait, reason, epoch, slot, now, lease, seq, recheck, *marks = _text(reply).split()
        promise = None
        if slot != "0":
            due = tuple(int(mark) / _MICRO for mark in marks)
            promise = Reservation(int(epoch), int(slot) / _MICRO, due)
        return Decision(
            granted=granted == "1",
            wait=int(wait) / _MICRO,
            reason=reason,
            epoch=int(epoch),
            reservation=promise,
            now=int(now) / _MICRO,
            lease=None if lease == "-" else lease,
            seq=int(seq),
            recheck=None if recheck == "-" else int(recheck) / _MICRO,
        )

    def _report(
        self,
        op: str,
        integration: str,
        tenant: str | None,
        plan: Plan,
        lease_id: str | None,
        feedback: Feedback,
        epoch: int | None = None,
        retry_after: float | None = None,
    ) -> ReportResult:
        words = [lease_id or "-", _word(feedback.seq), _word(epoch), _word(retry_after)]
        for lim in plan.limits:
            remaining, reset_after = feedback.quotas.get(lim.name, (None, None))
            words += [_word(feedback.adjust.get(lim.name, 0.0)), _word(remaining)]
            words.append(_word(reset_after))
        reply = self._call(op, integration, tenant, plan, words)
        epoch_now, decreased, old, new, cool, breaker, changed = _text(reply).split()
        return ReportResult(
            int(epoch_now),
            decreased == "1",
            int(old) / _MICRO,
            int(new) / _MICRO,
            int(cool) / _MICRO,
            breaker,
            changed == "1",
        )

    def report_success(
        self,
        integration: str,
        tenant: str | None,
        plan: Plan,
        *,
        lease_id: str | None,
        feedback: Feedback,
    ) -> ReportResult:
        """See ``Backend.report_success``."""
        return self._report("success", integration, tenant, plan, lease_id, feedback)

    def report_backoff(
        self,
        integration: str,
        tenant: str | None,
        plan: Plan,
        *,
        lease_id: str | None,
        feedback: Feedback,
        epoch: int | None,
        retry_after: float | None,
    ) -> ReportResult:
        """See ``Backend.report_backoff``."""
        return self._report(
            "backoff", integration, tenant, plan, lease_id, feedback, epoch, retry_after
        )

    def report_failure(
        self,
        integration: str,
        tenant: str | None,
        plan: Plan,
        *,
        lease_id: str | None,
        feedback: Feedback,
    ) -> ReportResult:
        """See ``Backend.report_failure``."""
        return self._report("failure", integration, tenant, plan, lease_id, feedback)

    def release(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """See ``Backend.release``."""
        (released,) = self._call("release", integration, tenant, _NO_PLAN, [lease_id])
        return bool(released == 1)

    def snapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        """See ``Backend.snapshot``."""
        reply = self._call("snapshot", integration, tenant, plan, [])
        now = reply[1] / _MICRO
        breaker = (_text(reply[2]), int(reply[3]), reply[4] / _MICRO)
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

    def count(self, integration: str, event: str) -> None:
        """See ``Backend.count``."""
        self._call("count", integration, None, _NO_PLAN, [event])

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
        self._call("breaker", integration, None, _NO_PLAN, [state, _word(open_seconds)])

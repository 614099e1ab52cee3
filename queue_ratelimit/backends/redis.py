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
import re
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import quote

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from queue_ratelimit.errors import BackendError, ConfigError
from queue_ratelimit.policy.state import (
    NO_FEEDBACK,
    Decision,
    Feedback,
    LimitParams,
    LimitSnapshot,
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

    def keys_for(self, integration: str, tenant: str | None) -> tuple[str, str, str]:
        """The Redis keys (state hash, lease set, the integration's breaker) of one limiter key.

        A tenant is percent-encoded (so ``:``, ``{``, ``}`` and spaces cannot reach into
        another key's name) and replaced by its SHA-256 when long.
        """
        base = tag = f"{{{self.prefix}:{integration}}}"
        if tenant is not None:
            part = quote(tenant, safe="")
            if len(part) > _MAX_TENANT_KEY:
                part = "#" + hashlib.sha256(tenant.encode()).hexdigest()
            base += f":t={part}"
        return base + ":state", base + ":leases", tag + ":breaker"

    def _run(
        self,
        op: str,
        integration: str,
        tenant: str | None,
        limits: Sequence[LimitParams],
        costs: Mapping[str, float],
        extra: Sequence[str],
        feedback: Feedback = NO_FEEDBACK,
    ) -> list[str]:
        args: list[str] = [op, _num(self._clock()) if self._clock else "", _num(self._idle_ttl)]
        args += [str(len(limits)), "" if feedback.seq is None else str(feedback.seq)]
        for lim in limits:
            args += [lim.name, _num(lim.rate), _num(lim.burst), _num(lim.min_rate)]
            args += [_num(lim.max_rate), _num(lim.increase), _num(lim.decrease)]
            args.append(_num(costs.get(lim.name, 0.0)))
            remaining, reset_after = feedback.quotas.get(lim.name, (None, None))
            args += [_num(remaining), _num(reset_after)]
        args += extra
        try:
            reply = self._script(keys=self.keys_for(integration, tenant), args=args)
        except redis.RedisError as exc:
            raise BackendError(f"redis {op} failed for {integration!r}: {exc}") from exc
        return [_text(v) for v in reply]

    def acquire(
        self,
        integration: str,
        tenant: str | None,
        limits: Sequence[LimitParams],
        costs: Mapping[str, float],
        *,
        max_wait: float,
        reserve: bool,
        reservation: Reservation | None,
        max_concurrent: int | None,
        lease_id: str | None,
        lease_ttl: float,
        breaker_open_seconds: float,
    ) -> Decision:
        """See ``Backend.acquire``."""
        extra = [
            _num(max_wait),
            "1" if reserve else "0",
            str(reservation.epoch) if reservation else "",
            _num(reservation.slot) if reservation else "",
            str(max_concurrent) if max_concurrent is not None else "",
            lease_id or "",
            _num(lease_ttl),
            _num(breaker_open_seconds),
        ]
        granted, wait, reason, epoch, slot, now, lease, seq = self._run(
            "acquire", integration, tenant, limits, costs, extra
        )
        return Decision(
            granted=granted == "1",
            wait=float(wait),
            reason=reason,
            epoch=int(epoch),
            reservation=Reservation(int(epoch), float(slot)) if slot else None,
            now=float(now),
            lease=lease or None,
            seq=int(seq),
        )

    def _report(
        self,
        op: str,
        integration: str,
        tenant: str | None,
        limits: Sequence[LimitParams],
        extra: list[str],
        feedback: Feedback,
    ) -> ReportResult:
        reply = self._run(op, integration, tenant, limits, feedback.adjust, extra, feedback)
        epoch, decreased, old, new, cool, breaker, changed = reply
        return ReportResult(
            int(epoch),
            decreased == "1",
            float(old),
            float(new),
            float(cool),
            breaker,
            changed == "1",
        )

    def report_success(
        self,
        integration: str,
        tenant: str | None,
        limits: Sequence[LimitParams],
        *,
        lease_id: str | None,
        feedback: Feedback,
    ) -> ReportResult:
        """See ``Backend.report_success``."""
        return self._report("success", integration, tenant, limits, [lease_id or ""], feedback)

    def report_backoff(
        self,
        integration: str,
        tenant: str | None,
        limits: Sequence[LimitParams],
        *,
        lease_id: str | None,
        feedback: Feedback,
        epoch: int | None,
        retry_after: float | None,
        cooldown_multiplier: float,
        max_backoff: float,
    ) -> ReportResult:
        """See ``Backend.report_backoff``."""
        extra = [
            lease_id or "",
            str(epoch) if epoch is not None else "",
            _num(retry_after),
            _num(cooldown_multiplier),
            _num(max_backoff),
        ]
        return self._report("backoff", integration, tenant, limits, extra, feedback)

    def report_failure(
        self,
        integration: str,
        tenant: str | None,
        limits: Sequence[LimitParams],
        *,
        lease_id: str | None,
        feedback: Feedback,
        breaker_threshold: int,
        breaker_open_seconds: float,
    ) -> ReportResult:
        """See ``Backend.report_failure``."""
        extra = [lease_id or "", str(breaker_threshold), _num(breaker_open_seconds)]
        return self._report("failure", integration, tenant, limits, extra, feedback)

    def release(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """See ``Backend.release``."""
        (released,) = self._run("release", integration, tenant, [], {}, [lease_id])
        return released == "1"

    def snapshot(
        self, integration: str, tenant: str | None, limits: Sequence[LimitParams]
    ) -> Snapshot:
        """See ``Backend.snapshot``."""
        reply = self._run("snapshot", integration, tenant, limits, {}, [])
        now, breaker = float(reply[1]), (reply[2], int(reply[3]), float(reply[4]))
        if reply[0] != "1":
            return Snapshot(False, 0, 0.0, 0, now, (), *breaker)
        views = []
        rest = reply[8:]
        for i in range(0, len(rest), 3):
            tokens = float(rest[i + 2])
            views.append(LimitSnapshot(rest[i], float(rest[i + 1]), tokens, max(0.0, -tokens)))
        epoch, cool, leases = int(reply[5]), float(reply[6]), int(reply[7])
        return Snapshot(True, epoch, cool, leases, now, tuple(views), *breaker)

    def reset(self, integration: str, tenant: str | None) -> None:
        """See ``Backend.reset``."""
        try:
            self.client.delete(*self.keys_for(integration, tenant)[:2])
        except redis.RedisError as exc:
            raise BackendError(f"redis reset failed for {integration!r}: {exc}") from exc

    def set_breaker(self, integration: str, state: str, open_seconds: float) -> None:
        """See ``Backend.set_breaker``."""
        if state not in ("open", "closed"):
            raise ValueError(f"breaker state must be 'open' or 'closed', not {state!r}")
        self._run("breaker", integration, None, [], {}, [state, _num(open_seconds)])

"""The state and answers of the limiter's rules: plain data, shared by policy and backends."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from queue_ratelimit.config import PRIMARY_LIMIT
from queue_ratelimit.policy import breaker as brk


@dataclass(frozen=True)
class LimitParams:
    """The configured bounds of one limit, as the decision rules need them."""

    name: str
    rate: float
    burst: float
    min_rate: float
    max_rate: float
    increase: float
    decrease: float
    window: float = 0.0  # seconds of a fixed window (burst units each); 0: a token bucket;
    # < 0: a sliding window of -window seconds (at most burst units in any such span)

    @property
    def slide(self) -> float:
        """Seconds of the sliding window this limit is (0: none)."""
        return -self.window if self.window < 0 else 0.0


@dataclass(frozen=True)
class Plan:
    """Everything a backend needs to know of one integration; built once per config.

    Attributes:
        limits: the limits, ``requests`` first.
        max_concurrent: the concurrency limit, or None.
        lease_ttl: seconds after which an unreleased concurrency lease expires.
        cooldown_multiplier: cooldown without ``retry_after``, in intervals (1 / rate).
        max_backoff: clamp of a cooldown the upstream did not state, seconds.
        max_quota_wait: clamp of a wait the upstream stated (``retry_after``), seconds; a
            key held longer than ``max_backoff`` refuses as ``exhausted``.
        breaker_threshold: consecutive failures that open the breaker.
        breaker_open_seconds: how long the breaker stays open (and a probe's turn lasts).
        slow_start: a key that has met no backoff climbs fast (``aimd``'s start phase).
        app: with an integration-wide limit, the plan of that level (``policy/chain.py``):
            every call is charged to its own key and to the integration's, in one decision.
        app_backoffs: which level a backoff lowers by default: ``tenant``, ``app`` or
            ``both``.
        fair_share: with ``app``, each active tenant gets its weighted share of it
            (``policy/fair.py``); ``weights`` by tenant (others 1).
    """

    limits: tuple[LimitParams, ...]
    max_concurrent: int | None = None
    lease_ttl: float = 300.0
    cooldown_multiplier: float = 2.0
    max_backoff: float = 300.0
    max_quota_wait: float = 86400.0
    breaker_threshold: int = 5
    breaker_open_seconds: float = 60.0
    slow_start: bool = True
    app: Plan | None = None
    app_backoffs: str = "tenant"
    fair_share: bool = False
    weights: tuple[tuple[str, float], ...] = ()

    @functools.cached_property
    def claimable(self) -> bool:
        """Token buckets alone, nothing decided apart: a SQL store may claim a process's
        next slots ahead on such a key (``steps.claimable``; computed once per plan)."""
        return (
            self.max_concurrent is None
            and self.app is None
            and not self.fair_share
            and all(lim.window == 0 for lim in self.limits)
        )


@dataclass
class BucketState:
    """Mutable state of one limit; ``quota_*`` hold the upstream's published quota, if any."""

    rate: float
    tokens: float
    ts: float
    quota_left: float | None = None
    quota_until: float = 0.0
    quota_rate: float = 0.0
    credit: float = 0.0  # units refilled since the bucket was created: a reservation's clock
    peak: float = 0.0  # the rate at the last multiplicative decrease (0: none yet)
    leaves: list[float] = field(default_factory=list)  # a sliding window's: policy/sliding


@dataclass
class KeyState:
    """Mutable state of one limiter key."""

    epoch: int
    cooldown_until: float
    buckets: dict[str, BucketState] = field(default_factory=dict)
    leases: dict[str, float] = field(default_factory=dict)
    seq: int = 0
    served_from: float = 0.0  # start of the current delivery slice (delivery.SLICES)
    served: float = 0.0  # successes reported in the current slice
    served_1: float = 0.0  # in the slice before it
    served_2: float = 0.0  # in the one before that
    served_3: float = 0.0  # and in the oldest one
    log: list[float] = field(default_factory=list)  # the last delivery.LOG success times
    paced_until: float = 0.0  # the next call's time in the arrival schedule (policy/pacing)
    ceiling: float = 0.0  # the most successes counted in a whole delivery window, per second
    counts: dict[str, int] = field(default_factory=dict)  # events counted while it lives


@dataclass(frozen=True)
class Reservation:
    """A paid-for future slot, redeemed by passing it back to ``acquire``.

    Attributes:
        epoch: the congestion epoch it was made in; a later decrease voids it.
        slot: when it falls due if the rate stays as it was when it was made.
        due: per limit, the bucket's ``credit`` at which it is paid off; when the rate has
            risen since, it falls due sooner than ``slot`` (empty: use ``slot``).
    """

    epoch: int
    slot: float
    due: tuple[float, ...] = ()


@dataclass(frozen=True, init=False)
class Decision:
    """The answer to an acquire.

    Attributes:
        granted: the call may go ahead after sleeping ``wait`` seconds.
        wait: seconds until the slot (granted: sleep this long; not granted: come back then).
        reason: ``"ok"``, ``"redeemed"``, ``"probe"`` (granted as the breaker's half-open
            probe), ``"rate"``, ``"cooldown"``, ``"concurrency"`` or ``"breaker_open"``.
        epoch: the congestion epoch the decision was made in; report a backoff with it.
        reservation: when not granted and a slot was reserved: present it on the next acquire.
        now: the decision time on the backend's clock.
        lease: the concurrency lease id taken, when the key has a concurrency limit.
        seq: the key's count of paid calls after this decision; report it with the response
            so the upstream's ``remaining`` can be corrected for calls granted since.
        recheck: with a reservation, when to come back: its slot, or sooner if the rate
            climbs on as AIMD climbs it (``None``: the same as ``wait``).
        tokens: when the acquire asked for them and was granted, each limit's tokens left
            after paying, at ``now`` (below 0: the debt of a slot granted ahead), in the
            plan's order: what an inbound limiter tells its clients (``RateLimit: r=``).
        app_epoch: with an integration-wide limit (``Plan.app``), that level's congestion
            epoch; report a backoff with it.
    """

    granted: bool
    wait: float
    reason: str
    epoch: int
    reservation: Reservation | None
    now: float
    lease: str | None = None
    seq: int = 0
    recheck: float | None = None
    tokens: tuple[float, ...] | None = None
    app_epoch: int | None = None

    def __init__(
        self,
        granted: bool,
        wait: float,
        reason: str,
        epoch: int,
        reservation: Reservation | None,
        now: float,
        lease: str | None = None,
        seq: int = 0,
        recheck: float | None = None,
        tokens: tuple[float, ...] | None = None,
        app_epoch: int | None = None,
    ) -> None:
        # One decision per acquire: the generated frozen __init__ sets each field through
        # object.__setattr__, about 1 us of the acquire's client side; this is a quarter.
        self.__dict__.update(
            granted=granted,
            wait=wait,
            reason=reason,
            epoch=epoch,
            reservation=reservation,
            now=now,
            lease=lease,
            seq=seq,
            recheck=recheck,
            tokens=tokens,
            app_epoch=app_epoch,
        )

    @property
    def come_back(self) -> float:
        """Seconds after which asking again is worthwhile (``recheck``, else ``wait``)."""
        return self.wait if self.recheck is None else self.recheck


@dataclass(frozen=True)
class Feedback:
    """What a response teaches besides success or backoff.

    Attributes:
        quotas: per limit, ``(remaining, reset_after)`` as the upstream published them.
        adjust: per limit, units to charge (positive) or refund (negative) now that the
            call's actual cost is known (an estimate was paid at acquire).
        seq: ``Decision.seq`` of the call that got this response.
    """

    quotas: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    adjust: Mapping[str, float] = field(default_factory=dict)
    seq: int | None = None


NO_FEEDBACK = Feedback()


class AcquireRequest(NamedTuple):
    """One acquire (or redemption) as the limiter hands it to a backend and the policy (a
    named tuple: it is built on every acquire, and a tuple is the cheapest value to build).

    Attributes:
        integration, tenant: the key.
        costs: units per limit (``Limiter.costs``).
        max_wait: the longest wait granted (slept by the caller).
        reserve: when not granted, reserve the slot (a requeued task redeems it).
        reservation: the reservation being redeemed, if any.
        lease_id: the concurrency lease to take when granted (a key with a concurrency limit).
        cooldown_wait: how much of a cooldown may be waited besides ``max_wait`` (None: as
            much as ``max_wait``).
        max_sleepers: the most places in line waited for (None: no cap).
        refusal_event: the fleet-wide event a refusal counts, in the same round trip (the
            task gate's ``"requeues"``: it requeues every task refused a slot).
        tokens: a grant answers each limit's tokens left (``Decision.tokens``).
    """

    integration: str
    tenant: str | None
    costs: Mapping[str, float]
    max_wait: float
    reserve: bool = True
    reservation: Reservation | None = None
    lease_id: str | None = None
    cooldown_wait: float | None = None
    max_sleepers: int | None = None
    refusal_event: str | None = None
    tokens: bool = False


SUCCESS, BACKOFF, FAILURE = "success", "backoff", "failure"
"""The kinds of :class:`Report`."""


class Report(NamedTuple):
    """What a call's answer tells a key: a success, a backoff or a failure.

    Attributes:
        kind: ``SUCCESS`` (additive increase; closes a half-open breaker), ``BACKOFF``
            (decrease once per congestion event, open a cooldown) or ``FAILURE`` (the
            breaker counts it).
        integration, tenant: the key.
        lease_id: the concurrency lease to give back.
        feedback: published quotas and cost corrections, applied first.
        epoch: a backoff's ``Decision.epoch`` (one decrease per congestion event).
        retry_after: a backoff's ``Retry-After`` in seconds.
        level: with an integration-wide limit, which level a backoff lowers: ``tenant``,
            ``app`` or ``both`` (None: the plan's ``app_backoffs``).
        app_epoch: a backoff's ``Decision.app_epoch``.
    """

    kind: str
    integration: str
    tenant: str | None
    lease_id: str | None = None
    feedback: Feedback = NO_FEEDBACK
    epoch: int | None = None
    retry_after: float | None = None
    level: str | None = None
    app_epoch: int | None = None


@dataclass(frozen=True)
class ReportResult:
    """What a success/backoff/failure report changed."""

    epoch: int
    decreased: bool
    old_rate: float
    new_rate: float
    cooldown_left: float
    breaker: str = brk.CLOSED
    breaker_changed: bool = False
    exhausted: bool = False  # this report held the key past max_backoff (a long quota)


@dataclass(frozen=True)
class LimitSnapshot:
    """One limit as seen at snapshot time.

    Attributes:
        name: the limit's name (``requests``, ``tokens``, ...).
        rate: current AIMD rate, units per second.
        tokens: tokens available now (negative while reservations are owed).
        reserved: tokens owed to reservations and waiting callers (``max(0, -tokens)``).
    """

    name: str
    rate: float
    tokens: float
    reserved: float


@dataclass(frozen=True)
class Snapshot:
    """A read-only view of one limiter key and its integration's breaker.

    Attributes:
        exists: the key holds state (it has been used and has not expired).
        epoch: the current congestion epoch.
        cooldown_left: seconds until the cooldown ends (0 when none runs).
        leases: concurrency leases currently held.
        now: the snapshot time on the backend's clock.
        limits: one view per limit, ``requests`` first.
        breaker: ``closed``, ``open`` or ``half_open``.
        breaker_failures: consecutive failures counted while closed.
        breaker_wait: seconds until the open breaker admits a probe (or the probe's turn ends).
        counts: the key's event counts (``requeues``, ``backoffs``, ``budget_exhausted``)
            while it lives.
        stored_name: the tenant's name as the key keeps it, when the key's name holds only
            its digest (``#<sha256>`` in ``scan``).
    """

    exists: bool
    epoch: int
    cooldown_left: float
    leases: int
    now: float
    limits: tuple[LimitSnapshot, ...] = ()
    breaker: str = brk.CLOSED
    breaker_failures: int = 0
    breaker_wait: float = 0.0
    counts: Mapping[str, int] = field(default_factory=dict)
    stored_name: str | None = None

    @property
    def breaker_holds(self) -> bool:
        """The breaker is open and its probe not yet due: the queue should stay paused."""
        return self.breaker != brk.CLOSED and self.breaker_wait > 0

    def limit(self, name: str = PRIMARY_LIMIT) -> LimitSnapshot:
        """The named limit's view; ``KeyError`` when the key has no such limit."""
        for lim in self.limits:
            if lim.name == name:
                return lim
        raise KeyError(name)


def new_state(now: float) -> KeyState:
    """A fresh key; its buckets are created full by ``aimd.sync_buckets`` on first use."""
    return KeyState(epoch=epoch_at(now), cooldown_until=0.0)


def epoch_at(now: float) -> int:
    """The epoch number a decrease at ``now`` moves to (microseconds, unique per key life)."""
    return math.floor(now * 1_000_000)

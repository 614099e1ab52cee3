"""Slots a process claims ahead of its calls: a SQL store's decisions at a high rate.

A SQL store's decision is a transaction on the key's row (two round trips to PostgreSQL,
a write lock on a SQLite file): a few thousand a second at most, for the whole fleet on
one key. With ``claim_ahead`` set, a store decides a process's next acquires of a key
together when that process asks often: one transaction runs the rules once per slot
(``steps.claim``: each slot paid, the arrival schedule moved on by each, as if the calls
had all been asked then) for the slots due within ``claim_ahead`` seconds, and this
process hands them out to its next acquires, in order, with no round trip.

How many it claims follows the process's own pace: as many acquires as it made in
``claim_ahead`` seconds up to its last claim (one, for a process that asks seldom: then
every acquire is its own transaction, as without claims), at most ``MOST``.

What it costs, bounded by ``claim_ahead``:

* A backoff or an operator's change another process makes reaches the slots this one
  claimed only at its next claim: the calls it makes meanwhile keep to the rate they were
  claimed at, at most ``claim_ahead`` past their slots (its own backoffs and failures drop
  its claims at once).
* A claimed slot not handed out within ``claim_ahead`` of its time is dropped: it was paid
  (the key never grants more than its limits), so the upstream gets fewer calls, never
  more. A slot handed out late goes at once, so at most one claim's slots go closer
  together than the schedule laid them.
* A forked child never uses its parent's claims.
* Past ``KEEP_POOLS`` keys, a process forgets those it has not claimed for in a long time
  (their next claim would be of one slot anyway): many tenants do not grow it unbounded.

Only plain acquires on token buckets are claimed (``steps.claimable``): a concurrency
limit's leases, an integration-wide level and its fair shares, windows, a reservation's
redemption and an acquire asking for the tokens left are decided one at a time.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping

from queue_ratelimit.errors import ConfigError
from queue_ratelimit.policy.admission import SLACK
from queue_ratelimit.policy.state import AcquireRequest, Decision

__all__ = ["MOST", "Claims", "check_claim_ahead"]

MOST = 256
"""The most slots one transaction claims."""
KEEP_POOLS = 1024
"""Keys past which a new one first forgets the idle ones (``Claims._forget_idle``)."""

_Key = tuple[str, str | None]

_LIVE: weakref.WeakSet[Claims] = weakref.WeakSet()
"""Every ``Claims`` of this process: a forked child forgets theirs."""


def _forget_in_child() -> None:
    for claims in list(_LIVE):
        claims._lock = threading.Lock()  # (no parent's thread holds it here)
        claims._pools = {}


os.register_at_fork(after_in_child=_forget_in_child)


def check_claim_ahead(value: object) -> float:
    """``value`` as seconds to claim ahead (0: off).

    Raises:
        ConfigError: naming ``claim_ahead``, for anything but a finite number of seconds in
            [0, 1].
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(None, "claim_ahead", value, "must be a number of seconds (0: off)")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(None, "claim_ahead", value, "must be between 0 (off) and 1 second")
    return float(value)


class _Pool:
    """One key's claimed slots in this process, and how fast it used the last claim."""

    __slots__ = ("costs", "made", "served", "slots")

    def __init__(self, costs: Mapping[str, float]) -> None:
        self.costs = costs  # what each of them pays
        self.slots: deque[tuple[float, Decision]] = deque()  # (its time here, as decided)
        self.made = 0.0  # when the last claim was committed, on this process's clock
        self.served = 0  # acquires answered from that claim, its first included


def _time(slot: tuple[float, Decision]) -> float:
    return slot[0]


class Claims:
    """The slots this process has claimed, by key (thread-safe; see the module).

    Args:
        ahead: ``claim_ahead``, seconds (> 0).
        clock: this process's clock (a fake one in tests); ``time.monotonic`` unset.
    """

    def __init__(self, ahead: float, clock: Callable[[], float] | None = None) -> None:
        self.ahead = ahead
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._pools: dict[_Key, _Pool] = {}
        _LIVE.add(self)

    def take(self, request: AcquireRequest) -> Decision | None:
        """The next slot claimed for ``request``'s key, as a grant made now (None: none
        left, or it would wait longer than ``request.max_wait``: ask the store)."""
        now = self._clock()
        with self._lock:
            pool = self._pools.get((request.integration, request.tenant))
            if pool is None or pool.costs != request.costs:
                return None
            slots = pool.slots
            while slots:
                at, decided = slots.popleft()
                if at + self.ahead < now:
                    continue  # (too late to use: dropped, never sent late)
                wait = at - now if at > now else 0.0
                if wait > request.max_wait + SLACK:  # (asked to wait less: kept for others)
                    slots.appendleft((at, decided))
                    return None
                pool.served += 1
                return Decision(
                    True,
                    wait,
                    decided.reason,
                    decided.epoch,
                    None,
                    decided.now + (now - pool.made),
                    seq=decided.seq,
                    app_epoch=decided.app_epoch,
                )
        return None

    def size(self, request: AcquireRequest) -> int:
        """How many slots the store claims for ``request`` now: the acquires of its key this
        process made in ``ahead`` seconds, at the pace it used its last claim (1 at first)."""
        now = self._clock()
        with self._lock:
            pool = self._pools.get((request.integration, request.tenant))
            if pool is None:
                return 1
            elapsed = now - pool.made
            if elapsed <= 0:
                return MOST
            return max(1, min(MOST, int(pool.served * self.ahead / elapsed)))

    def keep(self, request: AcquireRequest, decisions: list[Decision]) -> None:
        """Keep a claim's slots after its first (which answers ``request``), in time order
        with those another thread of this process claimed meanwhile (paid for: none is
        dropped)."""
        made = self._clock()  # (after the commit: each slot is placed no sooner than it is)
        key = (request.integration, request.tenant)
        slots = [(made + decided.wait, decided) for decided in decisions[1:]]
        with self._lock:
            pool = self._pools.get(key)
            if pool is None or pool.costs != request.costs:
                if pool is None and len(self._pools) >= KEEP_POOLS:
                    self._forget_idle(made)
                pool = self._pools[key] = _Pool(request.costs)
            elif pool.slots and slots:
                slots = sorted([*pool.slots, *slots], key=_time)
                pool.slots.clear()
            pool.made, pool.served = made, 1
            pool.slots.extend(slots)

    def _forget_idle(self, now: float) -> None:
        """Forget the keys with no slot left whose last claim is so old that the next would
        be of one slot anyway (``size``): a process that meets many tenants keeps only
        those it asks for often."""
        idle = [
            key
            for key, pool in self._pools.items()
            if not pool.slots and now - pool.made > MOST * self.ahead
        ]
        for key in idle:
            del self._pools[key]

    def drop(self, integration: str) -> None:
        """Forget the slots claimed for ``integration``'s keys."""
        with self._lock:
            for key in [key for key in self._pools if key[0] == integration]:
                del self._pools[key]

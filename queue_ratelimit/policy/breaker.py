"""The circuit breaker of one integration, shared by every tenant and worker: pure rules.

``backends/lua/limiter.lua`` applies the same rules in Redis.

* **closed**: calls pass. Each failure (a 5xx, a timeout: not a 429, which is a backoff)
  counts; a success resets the count. ``threshold`` consecutive failures open the breaker.
* **open** for ``open_seconds``: nothing is granted; the wait is the time left. Successes of
  calls that were already in flight change nothing.
* **half-open** after that: the next granted call is the one probe, and for ``open_seconds``
  no other call is granted. The probe's success closes the breaker; its failure opens it again.
  A probe that never reports (its worker died) is replaced once ``open_seconds`` have passed.
"""

from __future__ import annotations

from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class BreakerState:
    """Mutable breaker state: ``until`` ends the open interval or the probe's turn."""

    state: str = CLOSED
    failures: int = 0
    until: float = 0.0

    @property
    def is_default(self) -> bool:
        """Closed with no failures counted: nothing worth storing."""
        return self.state == CLOSED and self.failures == 0


def admit(breaker: BreakerState, now: float) -> tuple[float, bool]:
    """Whether a call may be granted: ``(wait, probe)``; ``wait > 0`` means not now."""
    if breaker.state == CLOSED:
        return 0.0, False
    if now < breaker.until:
        return breaker.until - now, False
    return 0.0, True


def start_probe(breaker: BreakerState, now: float, open_seconds: float) -> None:
    """The admitted probe was granted: hold every other call back while it runs."""
    breaker.state = HALF_OPEN
    breaker.until = now + open_seconds


def on_success(breaker: BreakerState) -> None:
    """A call succeeded: reset the count, close after a probe; ignored while open."""
    if breaker.state != OPEN:
        breaker.state, breaker.failures, breaker.until = CLOSED, 0, 0.0


def on_failure(breaker: BreakerState, now: float, threshold: int, open_seconds: float) -> None:
    """A call failed: count it, and open the breaker at ``threshold`` or after a probe."""
    if breaker.state == OPEN:
        return
    breaker.failures += 1
    if breaker.state == HALF_OPEN or breaker.failures >= threshold:
        breaker.state = OPEN
        breaker.until = now + open_seconds


def force(state: str, now: float, open_seconds: float) -> BreakerState:
    """An operator's override: ``open`` for ``open_seconds`` from now, or ``closed``."""
    if state == OPEN:
        return BreakerState(OPEN, 0, now + open_seconds)
    if state == CLOSED:
        return BreakerState()
    raise ValueError(f"breaker state must be {OPEN!r} or {CLOSED!r}, not {state!r}")

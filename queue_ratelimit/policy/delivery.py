"""The rate the upstream actually served: the successes of the last window, counted.

Each success is kept in a log of the last ``LOG`` success times, and counted in slices of
the window. While the log reaches back a whole window (up to ``LOG`` successes per window),
the count over the last window is exact; past that, it is the sliding-window estimate of
the slices, whose error is a part of one slice: a few calls, which is small beside that
many. At a few calls per second, a slice holds one or two calls, and where in it they fell
moved the estimate by 10 to 30 %: a congestion event then set its peak that far off.

Free of I/O and clocks, like ``aimd``, which uses it at every success and congestion event;
``backends/lua/limiter.lua`` counts the same way (its ``roll_delivery`` and ``log_count``).
"""

from __future__ import annotations

import math

from queue_ratelimit.policy.state import KeyState

DELIVERY_WINDOW = 1.0
"""Seconds over which successes are counted to estimate the delivered rate."""

MIN_SPAN = DELIVERY_WINDOW / 2
"""A young key's count is taken over at least this long: the success or two of its first
instants are not a rate."""

LOG = 64
"""Success times kept per key, of the last window only: its count is exact up to this many
(and a key serving a few calls per second keeps a few)."""

SLICES = 3
"""The delivery window is counted in slices of ``DELIVERY_WINDOW / SLICES``: the current one
and the ``SLICES`` before it (the oldest of which the window covers in part)."""


def roll(state: KeyState, now: float) -> None:
    """Move the delivery slices on to the one holding ``now``; each slice completed closes a
    whole window, which may raise the ``ceiling``."""
    width = DELIVERY_WINDOW / SLICES
    if now < state.served_from + width:
        return
    steps = math.floor((now - state.served_from) / width)
    if steps > SLICES:
        state.served_from = now
        state.served = state.served_1 = state.served_2 = state.served_3 = 0.0
        return
    for _ in range(steps):
        whole = state.served + state.served_1 + state.served_2  # the window it completes
        state.ceiling = max(state.ceiling, whole / DELIVERY_WINDOW)
        state.served_3, state.served_2 = state.served_2, state.served_1
        state.served_1, state.served = state.served, 0.0
    state.served_from += steps * (DELIVERY_WINDOW / SLICES)


def record(state: KeyState, now: float) -> None:
    """Count a success at ``now``: in the current slice and in the log, which keeps the
    successes of the last window only, at most ``LOG`` of them (the oldest go first)."""
    roll(state, now)
    state.served += 1.0
    log = state.log
    log.append(now)
    drop = 0
    while drop < len(log) and log[drop] <= now - DELIVERY_WINDOW:
        drop += 1
    drop = max(drop, len(log) - LOG)
    del log[:drop]


def delivered(state: KeyState, now: float, age: float | None = None) -> float:
    """Successes per second over the last ``DELIVERY_WINDOW``: counted in the log when it
    reaches back that far, else the slices' sliding-window estimate (also when the log
    holds fewer than the slices certainly within the window: a state saved before the log,
    or by a worker of an earlier version, which keeps none).

    ``age``: seconds the key has counted successes, when that may be less than the window
    (a young key): the count is then over that time, no shorter than ``MIN_SPAN``, instead
    of a window whose first part the key did not live.
    """
    roll(state, now)
    window = DELIVERY_WINDOW if age is None else min(DELIVERY_WINDOW, max(MIN_SPAN, age))
    since = now - DELIVERY_WINDOW
    log = state.log
    count, full = 0, False
    for at, t in enumerate(log):  # (in time order: those from the first after `since` on)
        if t > since:
            count, full = len(log) - at, at == 0 and len(log) >= LOG
            break
    recent = state.served + state.served_1 + state.served_2  # all within the window
    if not full and count >= recent:  # (fewer: a log missing successes, written by an
        return count / window  # earlier build)
    width = DELIVERY_WINDOW / SLICES
    left = max(0.0, 1.0 - (now - state.served_from) / width)
    return max(float(count), recent + state.served_3 * left) / window  # (the log's: so many
    # at least)

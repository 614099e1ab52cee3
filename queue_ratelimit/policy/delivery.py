"""The rate the upstream actually served: successes counted in slices of a sliding window.

Free of I/O and clocks, like ``aimd``, which uses it at every success and congestion event;
``backends/lua/limiter.lua`` counts the same way (its ``roll_delivery``).
"""

from __future__ import annotations

import math

from queue_ratelimit.policy.state import KeyState

DELIVERY_WINDOW = 1.0
"""Seconds over which successes are counted to estimate the delivered rate."""

MIN_SPAN = DELIVERY_WINDOW / 2
"""A young key's count is taken over at least this long: the success or two of its first
instants are not a rate."""

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


def delivered(state: KeyState, now: float, age: float | None = None) -> float:
    """Successes per second over the last ``DELIVERY_WINDOW`` (sliding-window estimate).

    ``age``: seconds the key has counted successes, when that may be less than the window
    (a young key): the count is then over that time, no shorter than ``MIN_SPAN``, instead
    of a window whose first part the key did not live.
    """
    roll(state, now)
    width = DELIVERY_WINDOW / SLICES
    left = max(0.0, 1.0 - (now - state.served_from) / width)
    recent = state.served + state.served_1 + state.served_2
    window = DELIVERY_WINDOW if age is None else min(DELIVERY_WINDOW, max(MIN_SPAN, age))
    return (recent + state.served_3 * left) / window

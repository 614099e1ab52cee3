"""Outside a task, an HTTP client waits out a ``RateLimited`` and tries again (``retries=``
on the ``requests`` adapter, the ``httpx`` transports and the aiohttp middleware): the
policy, once, for the blocking and the asyncio clients."""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from queue_ratelimit import context
from queue_ratelimit.errors import RateLimited

__all__ = ["NO_RETRIES", "Retries"]

T = TypeVar("T")


@dataclass(frozen=True)
class Retries:
    """Outside a task, wait out a ``RateLimited`` and try again: up to ``times`` more times,
    all within ``deadline`` seconds of the first attempt (None: bounded by the waits alone).
    A script or a web handler then gets its answer late instead of an exception; inside a
    rate-limited task a ``RateLimited`` still requeues the task (sleeping there would hold a
    worker)."""

    times: int = 0
    deadline: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.times, bool) or not isinstance(self.times, int) or self.times < 0:
            raise ValueError(f"retries must be a whole number >= 0, not {self.times!r}")
        if self.deadline is not None and not (0 < self.deadline < float("inf")):
            raise ValueError(
                f"retry_deadline must be a number of seconds > 0, not {self.deadline!r}"
            )

    def run(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, tried again after each ``RateLimited`` these retries wait out."""
        started = time.monotonic()
        for tried in itertools.count():
            try:
                return attempt()
            except RateLimited as exc:
                wait = self.wait_before(exc, tried, time.monotonic() - started)
                if wait is None:
                    raise
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def arun(
        self, attempt: Callable[[], Awaitable[T]], sleep: Callable[[float], Awaitable[None]]
    ) -> T:
        """``run`` for an event loop: ``await attempt()``, waits with ``await sleep(...)``."""
        started = time.monotonic()
        for tried in itertools.count():
            try:
                return await attempt()
            except RateLimited as exc:
                wait = self.wait_before(exc, tried, time.monotonic() - started)
                if wait is None:
                    raise
                await sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def wait_before(self, exc: RateLimited, attempt: int, elapsed: float) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to raise ``exc`` now."""
        if attempt >= self.times or context.on_rate_limited.get() is not None:
            return None
        wait = max(0.0, exc.retry_after)
        if self.deadline is not None and elapsed + wait > self.deadline:
            return None
        return wait


NO_RETRIES: Final = Retries()

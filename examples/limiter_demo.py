"""See the AIMD limiter find an upstream's hidden limit, on the in-process memory backend.

Run: ``python examples/limiter_demo.py`` (no server needed). An upstream that allows at most
``HIDDEN_LIMIT`` requests per second (a sliding one-second window, unknown to the client)
answers 429 with ``Retry-After`` beyond it. A client asks the limiter before every call and
reports each answer. Time is simulated, so a minute of traffic takes a moment to show.
"""

from __future__ import annotations

import collections

from queue_ratelimit import IntegrationConfig, Limiter, MemoryBackend

HIDDEN_LIMIT = 8.0  # requests per second the upstream accepts; the client is not told
DURATION = 60.0  # simulated seconds


class SimulatedClock:
    """Time that moves only when the demo sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class HiddenLimitUpstream:
    """Allows ``limit`` calls in any one-second window; answers 429 + Retry-After beyond it."""

    def __init__(self, limit: float, clock: SimulatedClock) -> None:
        self.limit = limit
        self.clock = clock
        self.recent: collections.deque[float] = collections.deque()

    def call(self) -> tuple[int, float | None]:
        now = self.clock()
        while self.recent and self.recent[0] <= now - 1.0:
            self.recent.popleft()
        if len(self.recent) >= self.limit:
            return 429, round(self.recent[0] + 1.0 - now, 3)
        self.recent.append(now)
        return 200, None


def main() -> None:
    clock = SimulatedClock()
    config = IntegrationConfig(
        name="upstream",
        rate_limit_per_sec=2.0,  # a cautious start
        burst_size=1.0,
        increase_factor=0.05,
        decrease_factor=0.7,
        min_rate=0.5,
        max_rate=50.0,  # generous: the limiter must find the real limit itself
        max_wait=5.0,
    )
    limiter = Limiter(MemoryBackend(clock=clock), {"upstream": config}, sleep=clock.sleep)
    upstream = HiddenLimitUpstream(HIDDEN_LIMIT, clock)
    ok = throttled = 0
    next_report = 0.0
    print(f"hidden limit {HIDDEN_LIMIT:g}/s, client starts at {config.rate_limit_per_sec:g}/s")
    print(" time   rate   200s  429s")
    while clock() < DURATION:
        decision = limiter.wait("upstream", timeout=config.max_wait)
        status, retry_after = upstream.call()
        if status == 429:
            throttled += 1
            limiter.on_backoff("upstream", retry_after=retry_after, epoch=decision.epoch)
        else:
            ok += 1
            limiter.on_success("upstream")
        if clock() >= next_report:
            rate = limiter.snapshot("upstream").limit().rate
            bar = "#" * round(rate * 4)
            print(f"{clock():5.1f}s {rate:5.2f}/s {ok:5d} {throttled:5d}  {bar}")
            next_report += 5.0
    share = throttled / (ok + throttled)
    print(
        f"\n{ok} calls succeeded in {DURATION:g} s: {ok / DURATION:.2f}/s against a hidden "
        f"limit of {HIDDEN_LIMIT:g}/s ({ok / DURATION / HIDDEN_LIMIT:.0%}); "
        f"{throttled} answered 429 ({share:.1%})."
    )


if __name__ == "__main__":
    main()

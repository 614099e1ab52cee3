"""Sliding windows (``LimitConfig.per_sliding_window``) in the shared behaviour suite: every
backend, under ``Limiter`` and ``AsyncLimiter``, on the fake clock."""

from __future__ import annotations

import bisect

import pytest

from queue_ratelimit import ConfigError, IntegrationConfig, LimitConfig
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.errors import InvalidRequest
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.policy import sliding
from queue_ratelimit.policy.state import BucketState, Feedback, LimitParams
from tests.conftest import FakeClock
from tests.support import SVC
from tests.unit.conftest import MakeLimiter

FAST = SVC.replace(rate_limit_per_sec=1000.0, burst_size=1000.0, max_rate=1000.0)
MINUTE = FAST.replace(limits=(LimitConfig.per_sliding_window("minute", 5, 60.0),))
ONE = {"requests": 1.0, "minute": 1.0}


def _take(limiter: Limiter, cost: dict[str, float] = ONE, max_wait: float = 0.0) -> object:
    return limiter.acquire("svc", cost=cost, max_wait=max_wait, reserve=False)


def test_n_in_any_window_and_a_unit_back_exactly_a_window_after_its_grant(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(MINUTE)
    start = clock.now
    for offset in (0.0, 10.0, 20.0, 30.0, 40.0):  # five spread over the first 40 s
        clock.now = start + offset
        assert _take(limiter).granted  # type: ignore[attr-defined]
    clock.now = start + 50.0
    refused = _take(limiter)
    assert not refused.granted  # type: ignore[attr-defined]
    assert refused.wait == pytest.approx(10.0)  # type: ignore[attr-defined]  # the first's unit: 60 s on
    clock.now = start + 60.0 - 0.001
    assert not _take(limiter).granted  # type: ignore[attr-defined]
    clock.now = start + 60.0
    assert _take(limiter).granted  # type: ignore[attr-defined]  # exactly then, not an aligned minute
    assert not _take(limiter).granted  # type: ignore[attr-defined]  # (the one of 10 s: at 70 s)
    clock.now = start + 70.0
    assert _take(limiter).granted  # type: ignore[attr-defined]


def test_never_more_than_n_in_any_window_where_a_bucket_lets_twice_through(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    """A call every second for five minutes: the sliding window's grants, and those of a
    bucket of the same rate and burst (5 per 60 s), counted in every 60 s span."""
    bucket = FAST.replace(limits=(LimitConfig("minute", 5 / 60.0, 5.0, 5 / 60.0, 5 / 60.0),))
    counts = {}
    for name, config in (("sliding", MINUTE), ("bucket", bucket)):
        limiter = make_limiter(config)
        start, grants = clock.now, []
        for second in range(300):
            clock.now = start + second
            if _take(limiter).granted:  # type: ignore[attr-defined]
                grants.append(clock.now)
        counts[name] = max(  # grants in (t - 60 s, t]
            bisect.bisect_right(grants, t) - bisect.bisect_right(grants, t - 60.0) for t in grants
        )
        clock.now = start + 1000.0
    assert counts["sliding"] == 5
    assert counts["bucket"] > 5  # (a full bucket, then a minute's refill)


def test_waits_are_granted_in_order_and_each_unit_is_counted_at_its_slot(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(MINUTE.replace(max_wait=120.0))
    start = clock.now
    calls = [_take(limiter, max_wait=120.0) for _ in range(12)]
    # five now, five 60 s later (the first five's units back); then a slot 120 s ahead,
    # more than a window: refused (the window keeps at most twice its units)
    assert [c.granted for c in calls] == [True] * 10 + [False] * 2  # type: ignore[attr-defined]
    waits = [c.wait for c in calls]  # type: ignore[attr-defined]
    assert waits == pytest.approx([0.0] * 5 + [60.0] * 5 + [120.0] * 2)
    booked = limiter.snapshot("svc").limit("minute")
    assert (booked.tokens, booked.reserved) == (-5.0, 5.0)  # the window's five, five ahead
    clock.now = start + 90.0
    assert limiter.snapshot("svc").limit("minute").tokens == 0.0  # the five of 60 s: till 120 s


def test_no_grant_more_than_a_window_ahead(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter(FAST.replace(limits=(LimitConfig.per_sliding_window("w", 2, 10.0),)))
    cost = {"w": 1.0}
    calls = [_take(limiter, cost, max_wait=60.0) for _ in range(5)]
    assert [c.granted for c in calls] == [True] * 4 + [False]  # type: ignore[attr-defined]
    assert [c.wait for c in calls] == pytest.approx([0.0, 0.0, 10.0, 10.0, 20.0])  # type: ignore[attr-defined]


def test_what_a_response_corrects_does_not_reach_it(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(MINUTE)
    assert [_take(limiter).granted for _ in range(4)] == [True] * 4  # type: ignore[attr-defined]
    limiter.on_success(
        "svc", feedback=Feedback(adjust={"minute": 3.0}, quotas={"minute": (0, 30.0)})
    )
    assert [_take(limiter).granted for _ in range(2)] == [True, False]  # type: ignore[attr-defined]


def test_a_share_of_a_window_smaller_than_a_cost_takes_the_share() -> None:
    """An outage fallback's share of a window (``local_plan``) may hold fewer units than
    a cost the config allows: the call takes them all, and waits for the window."""
    lim = LimitParams("w", 0.1, 2.0, 0.1, 0.1, 0.0, 0.5, -20.0)
    bucket = BucketState(rate=0.1, tokens=2.0, ts=0.0)
    assert sliding.slot(bucket, 0.0, lim, 5.0) == 0.0
    sliding.take(bucket, 0.0, lim, 5.0)
    assert bucket.leaves == [20.0, 20.0]
    assert sliding.slot(bucket, 1.0, lim, 5.0) == 20.0


def test_a_call_of_several_units(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter(MINUTE)
    start = clock.now
    assert _take(limiter, {"minute": 3.0}).granted  # type: ignore[attr-defined]
    clock.now = start + 30.0
    assert _take(limiter, {"minute": 2.0}).granted  # type: ignore[attr-defined]
    clock.now = start + 40.0
    refused = _take(limiter, {"minute": 4.0})
    assert refused.wait == pytest.approx(50.0)  # type: ignore[attr-defined]  # the three at 60 s, the two at 90 s
    granted = limiter.acquire("svc", cost={"minute": 1.0}, max_wait=0.0, tokens=True)
    assert not granted.granted
    clock.now = start + 60.0
    granted = limiter.acquire("svc", cost={"minute": 1.0}, max_wait=0.0, tokens=True)
    assert granted.granted
    assert granted.tokens is not None
    assert granted.tokens[1] == 2.0  # five, less the two of 30 s and this one


def test_a_refusal_reserves_nothing_on_it_and_its_redemption_asks_it_again(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(MINUTE)
    start = clock.now
    for _ in range(5):
        assert _take(limiter).granted  # type: ignore[attr-defined]
    refused = limiter.acquire("svc", cost=ONE, max_wait=0.0, reserve=True)
    assert not refused.granted
    assert refused.reservation is not None
    assert refused.wait == pytest.approx(60.0)
    assert refused.recheck == pytest.approx(60.0)  # its holder comes back then, not before
    other = _take(limiter)
    assert other.wait == pytest.approx(60.0)  # type: ignore[attr-defined]  # none of its units held
    clock.now = start + 60.0
    redeemed = limiter.acquire("svc", cost=ONE, max_wait=0.0, reservation=refused.reservation)
    assert redeemed.granted
    granted = [_take(limiter).granted for _ in range(5)]  # type: ignore[attr-defined]
    assert granted == [True] * 4 + [False]  # the redemption took one of the five


def test_a_backoff_leaves_the_window_as_it_is(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter(MINUTE)
    assert [_take(limiter).granted for _ in range(2)] == [True, True]  # type: ignore[attr-defined]
    limiter.on_backoff("svc", retry_after=3.0)
    clock.advance(4.0)
    granted = [_take(limiter).granted for _ in range(4)]  # type: ignore[attr-defined]
    assert granted == [True, True, True, False]  # the upstream counted the first two


def _filled(make_limiter: MakeLimiter, name: str, units: int, window: float) -> Limiter:
    """A limiter whose sliding window ``name`` just granted its ``units``, the next refused."""
    limiter = make_limiter(
        FAST.replace(limits=(LimitConfig.per_sliding_window(name, units, window),))
    )
    granted = [_take(limiter, {name: 1.0}).granted for _ in range(units + 1)]  # type: ignore[attr-defined]
    assert granted == [True] * units + [False]
    return limiter


def test_an_idle_key_keeps_its_window_past_idle_ttl(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = _filled(make_limiter, "hour", 3, 7200.0)
    cost = {"hour": 1.0}
    clock.advance(3600 * 1.2)  # idle past idle_ttl (an hour, and an eighth more)
    assert not _take(limiter, cost).granted  # type: ignore[attr-defined]  # not a fresh window
    clock.advance(7200 - 3600 * 1.2)
    assert _take(limiter, cost).granted  # type: ignore[attr-defined]


def test_a_full_window_past_max_backoff_is_exhausted(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = _filled(make_limiter, "day", 2, 86_400.0)
    refused = _take(limiter, {"day": 1.0})
    assert refused.reason == "exhausted"  # type: ignore[attr-defined]  # parked, no budget spent
    assert refused.wait == pytest.approx(86_400.0)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"window": 0.0}, "sliding"),
        ({"window": 60.0, "burst_size": 2.5}, "burst_size"),
        ({"window": 60.0, "burst_size": 1001.0}, "burst_size"),
        ({"window": 60.0, "sliding": "yes"}, "sliding"),
    ],
)
def test_a_bad_sliding_window_is_refused_naming_the_field(
    fields: dict[str, object], field: str
) -> None:
    settings: dict[str, object] = {"burst_size": 5.0, "sliding": True, **fields}
    with pytest.raises(ConfigError, match=rf"limits\.minute\.{field}"):
        LimitConfig("minute", 1.0, min_rate=1.0, max_rate=1.0, **settings)  # type: ignore[arg-type]


def test_the_integration_wide_level_is_not_a_sliding_window() -> None:
    with pytest.raises(ConfigError, match=r"app_limit\.sliding"):
        SVC.replace(app_limit=LimitConfig.per_sliding_window("app", 10, 60.0))


def test_a_cost_in_part_of_a_unit_is_refused() -> None:
    limiter = Limiter(MemoryBackend(), {"svc": MINUTE})
    with pytest.raises(InvalidRequest, match="whole units"):
        limiter.acquire("svc", cost={"minute": 0.5})


def test_a_config_file_states_one() -> None:
    config = IntegrationConfig.from_mapping(
        "svc",
        {
            "rate_limit_per_sec": 10.0,
            "limits": {"minute": {"burst_size": 100, "window": 60, "sliding": True}},
        },
    )
    (limit,) = config.limits
    assert (limit.sliding, limit.window, limit.burst_size) == (True, 60.0, 100.0)

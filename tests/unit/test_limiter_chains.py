"""Chains (``IntegrationConfig.app_limit``) in the shared behaviour suite: every backend,
under ``Limiter`` and ``AsyncLimiter``, on the fake clock. Each call is charged to its
tenant's key and to the integration-wide level in one decision, all or nothing."""

from __future__ import annotations

import pytest

from queue_ratelimit import ConfigError, IntegrationConfig, InvalidRequest, LimitConfig
from tests.conftest import FakeClock
from tests.support import SVC, most_in_one_second
from tests.unit.conftest import MakeLimiter

# each tenant 10/s (burst 1); all of them together 4/s (burst 2), adapting from 1 to 8
APP = LimitConfig("app", 4.0, 2.0, 1.0, 8.0, increase_factor=0.5, decrease_factor=0.5)
CHAINED = SVC.replace(app_limit=APP, increase_factor=0.0)


def _grants(limiter: object, tenants: list[str | None], **kwargs: object) -> list[bool]:
    return [
        limiter.acquire("svc", tenant, max_wait=0.0, reserve=False, **kwargs).granted  # type: ignore[attr-defined]
        for tenant in tenants
    ]


def test_the_integration_wide_limit_holds_across_tenants(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(CHAINED)
    assert _grants(limiter, ["a", "b", "c"]) == [True, True, False]  # the app's burst of 2
    clock.advance(0.25)  # one app token (4/s); every tenant's own bucket is full
    assert _grants(limiter, ["c", "a"]) == [True, False]
    granted, start = 0, clock.now
    for _ in range(40):  # 2 s of calls from 4 tenants every 50 ms
        clock.advance(0.05)
        granted += sum(_grants(limiter, ["a", "b", "c", "d"]))
    assert granted == pytest.approx(4.0 * (clock.now - start), abs=1)  # the app's 4/s


def test_a_refusal_by_either_level_charges_neither(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(CHAINED.replace(rate_limit_per_sec=2.0))  # each tenant 2/s
    assert _grants(limiter, ["a", "b"]) == [True, True]  # the app's burst spent
    assert _grants(limiter, ["c"]) == [False]  # refused by the app: c's own token kept
    clock.advance(0.25)  # one app token
    assert _grants(limiter, ["a"]) == [False]  # a's own bucket holds half a token
    assert _grants(limiter, ["c"]) == [True]  # the app's token was not taken by a's refusal


def test_a_tenants_reservations_never_hold_another_tenant_back(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(CHAINED.replace(rate_limit_per_sec=1.0, min_rate=1.0))
    first = limiter.acquire("svc", "busy", max_wait=0.0)
    assert first.granted
    backlog = [limiter.acquire("svc", "busy", max_wait=0.0) for _ in range(20)]
    assert not any(d.granted for d in backlog)  # reserved at busy's own 1/s: 20 s of it
    assert backlog[-1].reservation is not None and backlog[-1].wait == pytest.approx(20.0)
    assert _grants(limiter, ["quiet"]) == [True]  # the app's second token is still there
    clock.advance(1.0)
    redeemed = limiter.acquire("svc", "busy", max_wait=0.0, reservation=backlog[0].reservation)
    assert redeemed.granted and redeemed.reason == "redeemed"


def test_a_reservation_held_back_by_the_app_comes_back_no_sooner_than_its_slot(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(CHAINED)
    assert _grants(limiter, ["a", "b"]) == [True, True]
    refused = limiter.acquire("svc", "c", max_wait=0.0)
    assert not refused.granted and refused.reservation is not None
    assert refused.come_back == pytest.approx(0.25)  # the app's next token, not c's own now


def test_backoffs_lower_the_tenant_by_default_and_the_app_when_attributed(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(CHAINED.replace(max_wait=10.0))
    decision = limiter.acquire("svc", "a")
    assert decision.app_epoch is not None
    result = limiter.on_backoff("svc", "a", retry_after=5.0, epoch=decision.epoch)
    assert result.decreased and result.cooldown_left == pytest.approx(5.0)
    assert limiter.app_snapshot("svc").cooldown_left == 0.0  # the token's 429 is its own
    clock.advance(0.5)
    assert _grants(limiter, ["b"]) == [True]
    decision = limiter.acquire("svc", "b")
    result = limiter.on_backoff(
        "svc", "b", retry_after=3.0, level="app", app_epoch=decision.app_epoch
    )
    assert result.decreased
    app = limiter.app_snapshot("svc")
    assert app.cooldown_left == pytest.approx(3.0)
    assert app.limit().rate == pytest.approx(2.0)  # 4/s halved
    assert limiter.snapshot("svc", "b").limit().rate == pytest.approx(10.0)  # b's own kept
    refused = limiter.acquire("svc", "c", max_wait=0.0, reserve=False)
    assert refused.reason == "cooldown"
    assert refused.wait == pytest.approx(3.5)  # the cooldown, then a token at 2/s
    again = limiter.on_backoff("svc", "c", level="app", app_epoch=decision.app_epoch)
    assert not again.decreased  # the same event at the app level: one decrease
    assert limiter.app_snapshot("svc").limit().rate == pytest.approx(2.0)


def test_a_config_can_attribute_every_backoff_to_both_levels(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(CHAINED.replace(app_backoffs="both", max_wait=10.0))
    limiter.acquire("svc", "a")
    result = limiter.on_backoff("svc", "a", retry_after=2.0)
    assert result.decreased
    assert limiter.snapshot("svc", "a").limit().rate == pytest.approx(5.0)
    assert limiter.app_snapshot("svc").limit().rate == pytest.approx(2.0)
    assert limiter.app_snapshot("svc").cooldown_left == pytest.approx(2.0)


def test_successes_raise_both_levels(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    limiter = make_limiter(CHAINED.replace(increase_factor=1.0, max_wait=10.0))
    limiter.acquire("svc", "a")
    result = limiter.on_success("svc", "a")
    assert result.new_rate == pytest.approx(11.0)
    assert limiter.app_snapshot("svc").limit().rate == pytest.approx(4.5)


def test_a_slot_slept_through_an_app_cooldown_does_not_hold(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(CHAINED.replace(max_wait=10.0))
    assert _grants(limiter, ["a", "b"]) == [True, True]
    slept = limiter.acquire("svc", "c")
    assert slept.granted and slept.wait == pytest.approx(0.25)
    limiter.on_backoff("svc", "a", retry_after=4.0, level="app")
    clock.advance(0.25)
    assert not limiter.holds("svc", "c", slept)  # the app's cooldown began meanwhile


def test_a_daily_window_over_all_tenants(make_limiter: MakeLimiter, clock: FakeClock) -> None:
    day = LimitConfig.per_window("app", 5, 86_400.0)
    limiter = make_limiter(SVC.replace(app_limit=day, rate_limit_per_sec=20.0, burst_size=20.0))
    tenants: list[str | None] = ["a", "b", "c", None, "a", "b", "c"]
    assert _grants(limiter, tenants) == [True] * 5 + [False] * 2
    clock.advance((clock.now // 86_400.0 + 1) * 86_400.0 - clock.now)  # midnight UTC
    assert _grants(limiter, tenants) == [True] * 5 + [False] * 2


def test_a_backoff_level_is_checked() -> None:
    from queue_ratelimit import Limiter

    limiter = Limiter(configs={"svc": CHAINED})
    with pytest.raises(InvalidRequest, match="level"):
        limiter.on_backoff("svc", "a", level="everyone")
    with pytest.raises(InvalidRequest, match="app_limit"):
        Limiter(configs={"svc": SVC}).app_snapshot("svc")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"app_backoffs": "tenants"}, "app_backoffs"),
        ({"app_limit": {"rate_limit_per_sec": 5, "burst_size": 5}}, "app_limit.min_rate"),
        (
            {
                "app_limit": {
                    "rate_limit_per_sec": -1,
                    "burst_size": 5,
                    "min_rate": 1,
                    "max_rate": 5,
                }
            },
            "app_limit.rate_limit_per_sec",
        ),
        ({"app_limit": {"rate": 5}}, "app_limit.rate"),
    ],
)
def test_bad_chain_settings_fail_naming_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        IntegrationConfig.from_mapping("svc", data)
    assert caught.value.field == field


def test_a_table_reads_as_an_app_limit_and_round_trips() -> None:
    config = IntegrationConfig.from_mapping(
        "svc",
        {
            "app_limit": {"burst_size": 5000, "window": 3600},
            "app_backoffs": "both",
        },
    )
    assert config.app_limit == LimitConfig.per_window("app", 5000, 3600)
    assert IntegrationConfig.from_mapping("svc", config.to_dict()) == config


def test_slots_never_crowd_the_integration_wide_level(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    """A call its own key holds back takes the integration-wide token when granted but goes
    later: that token is not lent again meanwhile (that level's slots follow its schedule)."""
    limiter = make_limiter(
        SVC.replace(
            rate_limit_per_sec=0.5,  # each tenant: one call per 2 s
            min_rate=0.5,
            increase_factor=0.0,
            max_wait=2.0,
            app_limit=LimitConfig("app", 20.0, 1.0, 20.0, 20.0),
            fair_share=False,  # (the shares space calls out too: this rule alone)
        )
    )
    slots = []

    def ask(tenant: str) -> None:
        decision = limiter.acquire("svc", tenant)
        assert decision.granted
        slots.append(decision.now + decision.wait)

    for k in range(20):  # a second of first calls from twenty tenants
        ask(f"a{k}")
        clock.advance(0.05)
    for k in range(20):  # their second calls: granted now, held by their own keys a second
        ask(f"a{k}")
        clock.advance(0.05)
    for k in range(20):  # twenty other tenants meanwhile
        ask(f"b{k}")
        clock.advance(0.05)
    assert most_in_one_second(slots) <= 20 + 1  # the level's rate and burst, in slot time


def test_a_tenants_backoff_during_a_long_app_cooldown_is_not_a_new_hold(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter(CHAINED.replace(max_wait=10.0))
    limiter.acquire("svc", "a")
    held = limiter.on_backoff("svc", "a", retry_after=600.0, level="app")  # past max_backoff
    assert held.exhausted
    again = limiter.on_backoff("svc", "b", retry_after=2.0)  # the token's own 429
    assert not again.exhausted  # the app's hold was announced already
    assert again.cooldown_left == pytest.approx(600.0)


def test_a_process_that_decided_nothing_counts_on_the_chained_key(
    make_limiter: MakeLimiter,
) -> None:
    if make_limiter.kind == "memory":  # type: ignore[attr-defined]
        pytest.skip("memory: one process")
    worker = make_limiter(CHAINED)
    worker.acquire("svc", "a")
    fresh = make_limiter(CHAINED)  # another process: a count before any decision
    fresh.count("svc", "requeues", "a")
    assert worker.stats("svc").get("requeues") == 1
    assert [tenant for _, tenant in make_limiter(CHAINED).backend.scan("svc")] == ["a"]


def test_resetting_the_integration_forgets_its_integration_wide_level(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(CHAINED.replace(max_wait=10.0))
    limiter.acquire("svc", "a")
    limiter.on_backoff("svc", "a", retry_after=30.0, level="app")
    assert limiter.app_snapshot("svc").cooldown_left > 0
    limiter.reset("svc")
    assert not limiter.app_snapshot("svc").exists


def test_an_outage_fallback_divides_the_integration_wide_level_too() -> None:
    from queue_ratelimit.outage import local_plan
    from queue_ratelimit.plans import plan_for

    plan = local_plan(plan_for(CHAINED), 4)
    assert plan.app is not None
    assert plan.app.limits[0].rate == pytest.approx(1.0)  # 4/s among 4 processes


def test_a_share_mark_of_a_forgotten_bucket_is_asked_as_a_new_call() -> None:
    from queue_ratelimit.policy import fair
    from queue_ratelimit.policy.state import BucketState

    share = fair.Share(None, BucketState(rate=2.0, tokens=1.0, ts=0.0), 1.0, False, 0.0, 0.0)
    assert fair.booked_slot(share, (0.0, 5000.0), 1, now=10.0) == 10.0  # not 2,500 s later
    assert share.unbooked  # (so it pays its share when granted)
    share.bucket.tokens = -3.0  # three calls booked: a mark within them is waited for
    share.bucket.credit = 10.0
    assert fair.booked_slot(share, (0.0, 12.0), 1, now=10.0) == pytest.approx(11.0)


def test_an_app_limit_must_hold_one_request() -> None:
    with pytest.raises(ConfigError) as caught:
        SVC.replace(app_limit=LimitConfig("app", 1.0, 0.5, 1.0, 1.0))
    assert caught.value.field == "app_limit.burst_size"

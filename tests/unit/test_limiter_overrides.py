"""Run-time overrides (``policy/overrides.py``) in the shared behaviour suite: every backend,
under ``Limiter`` and ``AsyncLimiter``, on the fake clock."""

from __future__ import annotations

import pytest

from queue_ratelimit import ConfigError
from queue_ratelimit.plans import plan_for
from queue_ratelimit.policy.overrides import Override, combined, overridden
from tests.conftest import FakeClock
from tests.support import SVC
from tests.unit.conftest import MakeLimiter


def test_a_lower_max_rate_paces_the_next_decision(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(max_wait=5.0)  # 10/s, burst 1
    limiter.acquire("svc")
    assert limiter.acquire("svc").wait == pytest.approx(0.1)
    limiter.set_override("svc", max_rate=2.0, by="ops")
    assert limiter.acquire("svc").wait == pytest.approx(1.0)  # a token of debt, one more: at 2/s
    assert limiter.on_success("svc").new_rate == 2.0  # AIMD within the bound
    assert limiter.overrides("svc")[None].max_rate == 2.0
    assert limiter.overrides("svc")[None].by == "ops"


def test_a_tenants_override_leaves_the_others_alone_and_combines(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter()
    limiter.set_override("svc", "slow", max_rate=1.0)
    limiter.set_override("svc", max_rate=5.0, min_rate=2.0)
    assert limiter.on_success("svc", "slow").new_rate == 1.0  # the tighter max
    assert limiter.on_success("svc", "other").new_rate == 5.0  # the integration's only
    assert limiter.on_backoff("svc", "other").new_rate == 2.5
    assert limiter.on_backoff("svc", "other", retry_after=0.0).new_rate in (2.0, 2.5)


def test_min_rate_floors_the_decrease_and_a_pin_holds_the_rate(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter()
    limiter.set_override("svc", min_rate=8.0)
    assert limiter.on_backoff("svc").new_rate == 8.0  # 10 x 0.5, floored
    limiter.set_override("svc", "pinned", max_rate=3.0, min_rate=3.0)
    assert limiter.on_success("svc", "pinned").new_rate == 3.0
    clock.advance(100)
    assert limiter.on_backoff("svc", "pinned").new_rate == 3.0


def test_clearing_an_override_restores_the_config(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limiter.set_override("svc", max_rate=2.0)
    limiter.on_success("svc")
    limiter.clear_override("svc")
    assert limiter.overrides("svc") == {}
    rates = [limiter.on_success("svc").new_rate for _ in range(3)]
    assert rates == [3.0, 4.0, 5.0]  # climbing again from where the bound held it


def test_purge_forgets_overrides(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limiter.set_override("svc", "t", max_rate=2.0)
    limiter.backend.purge("svc")
    assert limiter.overrides("svc") == {}


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({}, "max_rate"),
        ({"max_rate": 0.0}, "max_rate"),
        ({"min_rate": float("nan")}, "min_rate"),
        ({"max_rate": 1.0, "min_rate": 2.0}, "min_rate"),
        ({"max_rate": True}, "max_rate"),
    ],
)
def test_bad_bounds_are_refused_naming_the_field(fields: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Override(**fields)  # type: ignore[arg-type]


def test_an_override_round_trips_and_garbage_reads_as_none() -> None:
    held = Override(max_rate=2.5, by="alice", at=1.0)
    assert Override.from_json(held.to_json()) == held
    for garbage in ("", "[]", "{}", '{"max_rate": -1}', "\xff", '{"max_rate": "x"}'):
        assert Override.from_json(garbage) is None


def test_the_bounds_move_the_start_rate_inside_them() -> None:
    plan = plan_for(SVC)  # 10/s, between 1 and 20
    assert overridden(plan, (5.0, None)).limits[0].rate == 5.0
    assert overridden(plan, (None, 15.0)).limits[0].rate == 15.0
    low_above = overridden(plan, (4.0, 6.0)).limits[0]
    assert (low_above.min_rate, low_above.max_rate) == (4.0, 4.0)
    assert combined({}, "t") is None


def test_a_snapshot_shows_the_rate_within_the_overrides(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()  # 10/s, between 1 and 20
    limiter.acquire("svc")
    limiter.set_override("svc", min_rate=15.0)
    assert limiter.snapshot("svc").limit().rate == 15.0  # what the next decision runs at


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_another_process_obeys_a_change_at_its_next_decision(
    make_limiter: MakeLimiter, tenant: str | None
) -> None:
    if make_limiter.kind == "memory":  # type: ignore[attr-defined]
        pytest.skip("memory: one process (its overrides hold at once, the tests above)")
    worker = make_limiter(SVC.replace(rate_limit_per_sec=10.0, max_rate=10.0, burst_size=1.0))
    operator = make_limiter(SVC.replace(rate_limit_per_sec=10.0, max_rate=10.0, burst_size=1.0))
    assert worker.acquire("svc", tenant).granted  # its view of the overrides: fresh, none
    operator.set_override("svc", tenant, max_rate=2.0, by="test")  # another process's
    decision = worker.acquire("svc", tenant, max_wait=10.0)
    assert decision.wait == pytest.approx(0.5)  # one token at 2/s, not 10/s

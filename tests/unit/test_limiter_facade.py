"""The Limiter facade: input checks, blocking wait, error wrapping, key safety on Redis."""

from __future__ import annotations

import dataclasses
import inspect
from urllib.parse import quote

import pytest
import redis

from queue_ratelimit import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidRequest,
    Limiter,
    MemoryBackend,
    RateLimited,
)
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.backends.redis_keys import SHARDS
from queue_ratelimit.policy.state import Decision
from tests.conftest import FakeClock
from tests.support import SVC


def test_unknown_integration_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="notion") as info:
        Limiter().acquire("notoin")
    assert info.value.integration == "notoin"


@pytest.mark.parametrize("tenant", ["", 42])
def test_bad_tenants_are_rejected(tenant: object) -> None:
    with pytest.raises(InvalidRequest, match="tenant"):
        Limiter(configs={"svc": SVC}).acquire("svc", tenant)  # type: ignore[arg-type]


def test_builtin_configs_are_the_default() -> None:
    assert Limiter().acquire("notion", "workspace-42").granted


def test_wait_sleeps_the_computed_wait_once(clock: FakeClock) -> None:
    slept: list[float] = []
    limiter = Limiter(MemoryBackend(clock=clock), {"svc": SVC}, sleep=slept.append)
    limiter.wait("svc", timeout=1.0)
    limiter.wait("svc", timeout=1.0)
    assert slept == [pytest.approx(0.1)]


def test_wait_raises_rate_limited_beyond_its_timeout_without_paying(clock: FakeClock) -> None:
    limiter = Limiter(MemoryBackend(clock=clock), {"svc": SVC}, sleep=lambda s: None)
    limiter.on_backoff("svc", retry_after=5.0)
    with pytest.raises(RateLimited) as info:
        limiter.wait("svc", timeout=1.0)
    assert info.value.retry_after == pytest.approx(5.2)
    assert limiter.snapshot("svc").limit().reserved == 0.0


def test_unreachable_redis_raises_backend_error_with_the_cause() -> None:
    limiter = Limiter(RedisBackend("redis://127.0.0.1:1/0"), {"svc": SVC})
    with pytest.raises(BackendError) as info:
        limiter.acquire("svc")
    assert isinstance(info.value, BackendUnavailable)  # SVC fails closed, the default
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    with pytest.raises(BackendError, match="scan failed"):  # operator tools: plain errors
        list(RedisBackend("redis://127.0.0.1:1/0").scan())


@pytest.mark.parametrize("prefix", ["", "a{b}", "x" * 65, "sp ace"])
def test_bad_prefixes_are_config_errors(redis_url: str, prefix: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        RedisBackend(redis_url, prefix=prefix)


HOSTILE_TENANTS = [
    "a:b",
    "a",
    "{svc}",
    "}{",
    "with space",
    "ünïcødé-✓",
    "x" * 10_000,
    "x" * 9_999 + "y",
    "t=a",
    "%3A",
    ":state",
]


@pytest.mark.faults
def test_hostile_tenants_get_distinct_hash_tags_and_scan_back(
    redis_url: str, key_prefix: str
) -> None:
    backend = RedisBackend(redis_url, prefix=key_prefix)
    keys = {backend.keys_for("svc", t)[0] for t in [*HOSTILE_TENANTS, None]}
    assert len(keys) == len(HOSTILE_TENANTS) + 1
    tags = {k[: k.index("}") + 1] for k in keys}  # what Redis Cluster hashes: a shard's
    shards = {f"{{{key_prefix}:svc:s={n}}}" for n in range(SHARDS)}
    assert tags <= shards | {f"{{{key_prefix}:svc}}"}
    assert all(k.count("{") == 1 and k.count("}") == 1 for k in keys)
    assert all(len(k) < 300 for k in keys)
    # the state written under one tenant is not seen by any other
    limiter = Limiter(backend, {"svc": SVC})
    limiter.on_backoff("svc", "a:b", retry_after=30.0)
    cooling = [t for t in [*HOSTILE_TENANTS, None] if limiter.snapshot("svc", t).exists]
    assert cooling == ["a:b"]
    # and every tenant's key lists its name (a long one by digest, its snapshot by name)
    for tenant in HOSTILE_TENANTS:
        limiter.acquire("svc", tenant)
    listed = {t for _, t in backend.scan("svc")}
    named = {t for t in HOSTILE_TENANTS if len(quote(t, safe="")) <= 128}  # the key spells it
    digests = {t for t in listed if t and t.startswith("#")}
    assert len(digests) == 2
    assert listed == named | digests
    names = {limiter.snapshot("svc", digest).stored_name for digest in digests}
    assert names == {"x" * 10_000, "x" * 9_999 + "y"}


@pytest.mark.faults
def test_two_prefixes_on_one_redis_do_not_share_state(redis_url: str, key_prefix: str) -> None:
    one = Limiter(RedisBackend(redis_url, prefix=key_prefix + "-one"), {"svc": SVC})
    two = Limiter(RedisBackend(redis_url, prefix=key_prefix + "-two"), {"svc": SVC})
    try:
        one.on_backoff("svc", retry_after=30.0)
        assert not two.snapshot("svc").exists
        assert two.acquire("svc").granted
    finally:
        one.reset("svc")
        two.reset("svc")


def test_large_credits_and_reservation_marks_survive_the_reply(
    redis_url: str, key_prefix: str, clock: FakeClock
) -> None:
    config = SVC.replace(rate_limit_per_sec=1e6, burst_size=1e6, min_rate=1.0, max_rate=1e6)
    limiter = Limiter(RedisBackend(redis_url, prefix=key_prefix, clock=clock), {"svc": config})
    for _ in range(150):  # each round refills a whole burst: credit passes 1e8 units
        assert limiter.acquire("svc", cost=1e6, max_wait=1.0).granted
        clock.advance(1.0)
    limiter.acquire("svc", cost=1e6, max_wait=1.0)
    held = limiter.acquire("svc", cost=1e6, max_wait=0.0)  # one more burst: reserved
    assert held.reservation is not None and held.reservation.due[0] > 1e8
    clock.advance(held.wait)
    assert limiter.acquire("svc", reservation=held.reservation).reason == "redeemed"


def test_state_in_another_layout_starts_afresh_and_is_rewritten(
    redis_url: str, key_prefix: str
) -> None:
    backend = RedisBackend(redis_url, prefix=key_prefix)
    state_key = backend.keys_for("svc", None)[0]
    backend.client.set(state_key, b"\x01" + b"\xff" * 40)  # a layout byte this script lacks
    limiter = Limiter(backend, {"svc": SVC})
    assert not limiter.snapshot("svc").exists
    assert limiter.acquire("svc").granted
    assert limiter.snapshot("svc").exists
    assert backend.client.get(state_key)[:1] == b"\x05"  # type: ignore[index]


def test_a_client_that_decodes_responses_gets_the_same_answers(
    redis_url: str, key_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    config = SVC.replace(max_concurrent=2)
    limiter = Limiter(RedisBackend(client, prefix=key_prefix), {"svc": config})
    decision = limiter.acquire("svc", "ws-1")
    assert decision.granted and decision.lease is not None
    assert limiter.on_backoff("svc", "ws-1", retry_after=2.0, lease=decision.lease).decreased
    snap = limiter.snapshot("svc", "ws-1")
    assert (snap.limit().name, snap.leases, snap.cooldown_left > 1.0) == ("requests", 0, True)
    assert list(limiter.backend.scan("svc")) == [("svc", "ws-1")]  # type: ignore[attr-defined]


def test_the_script_is_loaded_again_when_the_server_lost_it(
    redis_url: str, key_prefix: str, clock: FakeClock
) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = Limiter(RedisBackend(client, prefix=key_prefix, clock=clock), {"svc": SVC})
    assert limiter.acquire("svc").granted
    client.script_flush()  # as after a restart: other tests' backends reload it too
    assert limiter.acquire("svc").reason == "rate"  # the state survived; burst 1 is spent


def test_kept_acquire_arguments_follow_each_calls_cost_and_wait_bounds(
    redis_url: str, key_prefix: str
) -> None:
    # on the server's clock an acquire's arguments are packed once per (plan, bounds, cost)
    # and kept: calls that differ in any of them must still get their own answers
    config = SVC.replace(rate_limit_per_sec=1.0, burst_size=5.0, min_rate=1.0, max_rate=1.0)
    limiter = Limiter(RedisBackend(redis_url, prefix=key_prefix), {"svc": config})
    assert limiter.acquire("svc", cost=5.0, max_wait=0.0).granted
    assert limiter.acquire("svc", cost=0.0, max_wait=0.0).granted  # costs nothing: no wait
    refused = limiter.acquire("svc", cost=1.0, max_wait=0.0, reserve=False)
    assert (refused.granted, refused.reason) == (False, "rate")
    waited = limiter.acquire("svc", cost=1.0, max_wait=60.0)
    assert waited.granted and waited.wait > 0
    again = limiter.acquire("svc", cost=1.0, max_wait=0.0)  # the same bounds as `refused`
    assert not again.granted and again.reservation is not None  # but reserving, unlike it
    assert again.wait > waited.wait
    # a 2 s cooldown, then 1 s to the slot: within max_wait 1 s only with a cooldown_wait
    limiter.on_backoff("svc", retry_after=2.0)
    assert not limiter.acquire("svc", max_wait=1.0, cooldown_wait=0.0, reserve=False).granted
    assert limiter.acquire("svc", max_wait=1.0, cooldown_wait=5.0, reserve=False).granted
    # a place in line is a second at 1/s: the second call is two places back
    assert limiter.acquire("svc", "b", cost=5.0).granted
    assert limiter.acquire("svc", "b", max_wait=60.0, max_sleepers=1, reserve=False).granted
    assert not limiter.acquire("svc", "b", max_wait=60.0, max_sleepers=1, reserve=False).granted
    assert limiter.acquire("svc", "b", max_wait=60.0, max_sleepers=3, reserve=False).granted


@pytest.mark.parametrize(
    "settings",
    [
        {"idle_ttl": 0},
        {"breaker_poll": -1.0},
        {"breaker_poll": float("nan")},
        {"breaker_poll": 1e6},
    ],
)
def test_a_redis_backend_refuses_bad_settings_naming_them(
    redis_url: str, settings: dict[str, float]
) -> None:
    with pytest.raises(ConfigError, match=next(iter(settings))):
        RedisBackend(redis_url, **settings)  # type: ignore[arg-type]


def test_decisions_init_takes_every_field_in_order() -> None:
    # Decision's __init__ is written by hand (for speed): a field added without it fails here
    names = list(inspect.signature(Decision.__init__).parameters)[1:]
    assert names == [f.name for f in dataclasses.fields(Decision)]


def test_kept_acquire_arguments_belong_to_their_own_key(redis_url: str, key_prefix: str) -> None:
    configs = {"svc": SVC, "other": dataclasses.replace(SVC, name="other")}  # burst 1 each
    limiter = Limiter(RedisBackend(redis_url, prefix=key_prefix), configs)
    calls = [("svc", "a"), ("svc", "a"), ("svc", "b"), ("svc", None), ("other", "a")]
    granted = [limiter.acquire(name, tenant, reserve=False).granted for name, tenant in calls]
    assert granted == [True, False, True, True, True]

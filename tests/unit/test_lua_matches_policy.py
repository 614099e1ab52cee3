"""The Lua script and ``policy/`` (``admission.py``, ``aimd.py``) agree: random operation
sequences, step by step; so do the SQL stores, which run that policy on rows."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.backends.postgres import NOW, PostgresBackend
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.backends.sqlite import SQLiteBackend
from queue_ratelimit.config import IntegrationConfig, LimitConfig
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.policy.state import Feedback
from tests.conftest import FakeClock
from tests.support import SVC

CONFIG = dataclasses.replace(
    SVC,
    slow_start=True,  # the start phase until the first backoff, then plain AIMD
    burst_size=3.0,
    max_concurrent=2,
    lease_ttl=5.0,
    breaker_failure_threshold=2,
    breaker_open_seconds=3.0,
    limits=(LimitConfig("tokens", 50.0, 200.0, 5.0, 400.0, 2.0, 0.25),),
)
# one limit and no concurrency limit: the script decides most acquires on its fast path
ONE_LIMIT = dataclasses.replace(CONFIG, max_concurrent=None, limits=())
# a fixed window of 7 requests per 5 s besides the bucket (the ticks cross windows)
WINDOWED = dataclasses.replace(
    CONFIG, max_concurrent=None, limits=(LimitConfig.per_window("win", 7.0, 5.0),)
)
# a sliding window of 3 requests in any 5 s besides the bucket
SLIDING = dataclasses.replace(
    CONFIG, max_concurrent=None, limits=(LimitConfig.per_sliding_window("win", 3, 5.0),)
)
# a chain: every key (three tenants) under an adaptive integration-wide limit
APP = LimitConfig("app", 4.0, 2.0, 1.0, 20.0, 0.5, 0.5)
CHAINED = dataclasses.replace(CONFIG, app_limit=APP)
CHAINED_ONE = dataclasses.replace(
    ONE_LIMIT, app_limit=APP, app_backoffs="both", tenant_weights={"a": 2.5}
)
# a fixed rate per tenant under an adaptive integration-wide level (each its own start phase)
CHAINED_FIXED = dataclasses.replace(ONE_LIMIT, increase_factor=0.0, app_limit=APP)
TENANTS = st.sampled_from([None, "a", "b"])

acquire_op = st.tuples(
    st.just("acquire"),
    st.integers(0, 3),  # request cost
    st.integers(0, 200),  # tokens cost
    st.sampled_from([0.0, 0.05, 0.5, 5.0]),  # max_wait
    st.booleans(),  # reserve
    st.booleans(),  # redeem the last reservation
    st.sampled_from([None, 0.0, 0.3, 2.0]),  # cooldown_wait
    st.sampled_from([None, 1, 2]),  # max_sleepers
    st.booleans(),  # a grant answers its tokens left
    TENANTS,
)
quota_value = st.one_of(
    st.none(), st.tuples(st.sampled_from([0, 1, 5, 50]), st.sampled_from([0.0, 0.5, 2.0, 10.0]))
)
report_op = st.tuples(
    st.sampled_from(["success", "backoff", "failure", "failure"]),
    st.sampled_from([None, 0.5, 3.0]),  # retry_after
    st.booleans(),  # pass the epoch (and seq) of the last decision
    st.booleans(),  # give the last lease back
    quota_value,  # published quota of requests
    quota_value,  # published quota of tokens
    st.sampled_from([0.0, -40.0, 25.0]),  # tokens adjustment
    TENANTS,
    st.sampled_from([None, "tenant", "app", "both"]),  # the level a backoff lowers (a chain)
)
# 5000 s: idle past idle_ttl (3600 s, up to an eighth more in Redis): the key is revived
tick_op = st.tuples(st.just("tick"), st.sampled_from([0.0, 0.01, 0.1, 0.7, 2.5, 6.0, 5000.0]))
# successes 0.01 s apart: 80 fill the success log past its length (delivery.LOG)
burst_op = st.tuples(st.just("burst"), st.sampled_from([5, 80]), TENANTS)


def _approx(value: object) -> object:
    """Equal within what the script's answers carry: microseconds, rounded, from sums of
    times near 1.8e9 s (a double holds those to about 0.24 us each)."""
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9, abs=2e-6)
    if isinstance(value, tuple):
        return tuple(_approx(v) for v in value)
    return value


def _run(limiter: Limiter, clock: FakeClock, ops: list[tuple[object, ...]]) -> list[object]:
    limits = limiter.config("svc").limits
    windowed = any(lim.window > 0 for lim in limits)
    sliding = any(lim.sliding for lim in limits)
    has_tokens = bool(limits) and not windowed
    out: list[object] = []
    last = None
    for op in ops:
        if op[0] == "tick":
            clock.advance(float(op[1]))  # type: ignore[arg-type]
            continue
        if op[0] == "burst":
            for _ in range(int(op[1])):  # type: ignore[call-overload]
                rate = limiter.on_success("svc", op[2]).new_rate  # type: ignore[arg-type]
                clock.advance(0.01)
            out.append(rate)
            continue
        if op[0] == "acquire":
            _, req, tok, max_wait, reserve, redeem, cooldown_wait, sleepers, left, tenant = op
            res = last.reservation if (redeem and last is not None) else None
            cost = {"requests": req, "tokens": tok} if has_tokens else {"requests": req}
            if windowed:
                cost = {"requests": req, "win": req}
            decision = limiter.acquire(
                "svc",
                tenant,  # type: ignore[arg-type]
                cost=cost,
                max_wait=max_wait,
                reserve=bool(reserve),
                reservation=res,
                cooldown_wait=cooldown_wait,  # type: ignore[arg-type]
                max_sleepers=sleepers,  # type: ignore[arg-type]
                tokens=bool(left),
            )
            last = decision
            out.append(
                (
                    decision.granted,
                    decision.wait,
                    decision.reason,
                    decision.reservation.slot if decision.reservation else None,
                    decision.reservation.due if decision.reservation else None,
                    decision.recheck,
                    decision.lease is not None,
                    decision.epoch,
                    decision.seq,
                    decision.tokens,
                    decision.app_epoch,
                )
            )
            continue
        kind, retry_after, with_epoch, give_back, q_req, q_tok, adjust, tenant, level = op
        lease = last.lease if (give_back and last is not None) else None
        epoch = last.epoch if (with_epoch and last is not None) else None
        quotas = {name: q for name, q in (("requests", q_req), ("tokens", q_tok)) if q}
        if not has_tokens:
            quotas.pop("tokens", None)
        if sliding and q_tok:  # (a sliding window ignores corrections, as the script does)
            quotas["win"] = q_tok
        feedback = Feedback(
            quotas=quotas,  # type: ignore[arg-type]
            adjust={"tokens": adjust} if has_tokens else ({"win": adjust} if sliding else {}),  # type: ignore[dict-item]
            seq=last.seq if (with_epoch and last is not None) else None,
        )
        if kind == "success":
            result = limiter.on_success("svc", tenant, lease=lease, feedback=feedback)  # type: ignore[arg-type]
        elif kind == "failure":
            result = limiter.on_failure("svc", tenant, lease=lease, feedback=feedback)  # type: ignore[arg-type]
        else:
            result = limiter.on_backoff(
                "svc",
                tenant,  # type: ignore[arg-type]
                retry_after=retry_after,  # type: ignore[arg-type]
                epoch=epoch,
                lease=lease,
                feedback=feedback,
                level=level,  # type: ignore[arg-type]
                app_epoch=last.app_epoch if (with_epoch and last is not None) else None,
            )
        out.append(
            (
                result.decreased,
                result.old_rate,
                result.new_rate,
                result.cooldown_left,
                result.breaker,
                result.breaker_changed,
                result.epoch,
                result.exhausted,
            )
        )
    for tenant in (None, "a", "b"):
        snap = limiter.snapshot("svc", tenant)
        out.append(
            (
                snap.cooldown_left,
                snap.leases,
                tuple((s.name, s.rate, s.tokens) for s in snap.limits),
                (snap.breaker, snap.breaker_failures, snap.breaker_wait),
            )
        )
    return out


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(st.one_of(acquire_op, report_op, tick_op, burst_op), min_size=1, max_size=40))
@pytest.mark.parametrize(
    "config",
    [CONFIG, ONE_LIMIT, WINDOWED, SLIDING, CHAINED, CHAINED_ONE, CHAINED_FIXED],
    ids=[
        "two-limits",
        "one-limit",
        "windowed",
        "sliding",
        "chained",
        "chained-one-limit",
        "chained-fixed",
    ],
)
def test_random_sequences_give_identical_answers(
    redis_url: str, config: IntegrationConfig, ops: list[tuple[object, ...]]
) -> None:
    prefix = f"qrltest-{uuid.uuid4().hex[:12]}"
    clock = FakeClock()
    backend = RedisBackend(redis_url, prefix=prefix, clock=clock)
    try:
        _agree_with_memory(config, backend, clock, ops)
    finally:
        backend.purge("svc")
        backend.client.close()


def _agree_with_memory(
    config: IntegrationConfig, backend: object, clock: FakeClock, ops: list[tuple[object, ...]]
) -> None:
    """``ops`` on a limiter over ``backend`` (on ``clock``) answer as on the memory backend."""
    mem_clock = FakeClock()
    memory = Limiter(MemoryBackend(clock=mem_clock), {"svc": config})
    shared = Limiter(backend, {"svc": config})  # type: ignore[arg-type]
    expected = _run(memory, mem_clock, ops)
    actual = _run(shared, clock, ops)
    assert actual == [_approx(v) for v in expected]


def test_server_time_is_used_by_default(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    limiter = Limiter(RedisBackend(client, prefix=key_prefix), {"svc": SVC})
    seconds, micros = client.time()
    decision = limiter.acquire("svc")
    assert decision.now >= seconds + micros / 1e6
    after_s, after_us = client.time()
    assert decision.now <= after_s + after_us / 1e6


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(st.one_of(acquire_op, report_op, tick_op, burst_op), min_size=1, max_size=40))
@pytest.mark.parametrize("store", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    "config", [CONFIG, CHAINED_ONE, WINDOWED], ids=["two-limits", "chained-one-limit", "windowed"]
)
def test_sql_stores_give_the_memory_backends_answers(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    store: str,
    config: IntegrationConfig,
    ops: list[tuple[object, ...]],
) -> None:
    """The SQL stores run the memory backend's policy: their rows (JSON, one transaction
    each) must change no answer."""
    prefix = f"qrltest-{uuid.uuid4().hex[:12]}"
    clock = FakeClock()
    backend: SQLiteBackend | PostgresBackend
    if store == "sqlite":
        backend = SQLiteBackend(tmp_path / f"{prefix}.db", prefix=prefix, clock=clock)
    else:
        url = request.getfixturevalue("postgres_url")
        backend = PostgresBackend(url, prefix=prefix, clock=clock)
    try:
        _agree_with_memory(config, backend, clock, ops)
    finally:
        backend.purge("svc")
        backend.close()


def test_postgres_server_time_is_used_by_default(postgres_url: str, pg_prefix: str) -> None:
    backend = PostgresBackend(postgres_url, prefix=pg_prefix)
    limiter = Limiter(backend, {"svc": SVC})
    with psycopg.connect(postgres_url) as conn:
        before = conn.execute(NOW).fetchone()
        decision = limiter.acquire("svc")
        after = conn.execute(NOW).fetchone()
    backend.close()
    assert before is not None and after is not None
    assert before[0] <= decision.now <= after[0]

"""The script's fast path (the usual acquire and success) against its own general rules.

The same script with the fast path switched off decides every case by the general rules;
both run on the same crafted states (rates off their bounds, tokens above burst or in debt,
cooldowns, quotas, renamed limits, expiries due or not) and must leave the same answer,
the same stored bytes and the same TTL. A third copy, whose general rules answer an error,
counts the cases the fast path itself answered (a crafted state of another layout would
send every case to the general rules, and the comparison would prove nothing).
"""

from __future__ import annotations

import hashlib
import random
import struct
import uuid
from collections.abc import Iterator

import pytest
import redis

from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.policy.delivery import LOG
from queue_ratelimit.policy.state import (
    SUCCESS,
    AcquireRequest,
    Feedback,
    LimitParams,
    Plan,
    Report,
)

FAST_PATH = (
    "if n == 1 and bstate == CLOSED and not chained\n"
    "   and (op == ACQUIRE and max_conc == 0 or op == SUCCESS and not ARGV[2]) then"
)
CASES = 400
GENERAL = "local max, min, floor, ceil = math.max, math.min, math.floor, math.ceil"


class ScriptBackend(RedisBackend):
    """A ``RedisBackend`` running ``source`` instead of the package's script."""

    def __init__(self, client: redis.Redis, source: str, now: list[float]) -> None:
        super().__init__(client, prefix=f"qrltest-{uuid.uuid4().hex[:12]}", clock=lambda: now[0])
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()


@pytest.fixture
def pair(redis_url: str) -> Iterator[tuple[RedisBackend, RedisBackend, list[float]]]:
    client = redis.Redis.from_url(redis_url)
    source = RedisBackend(client)._source
    general = source.replace(FAST_PATH, "if false then", 1)
    assert general != source, "the fast path's condition moved: update FAST_PATH"
    probe = source.replace(GENERAL, "do return redis.error_reply('general rules') end\n" + GENERAL)
    assert probe != source, "the general rules' first line moved: update GENERAL"
    now = [0.0]
    fast = ScriptBackend(client, source, now)
    fast.probe = ScriptBackend(client, probe, now)  # type: ignore[attr-defined]
    yield fast, ScriptBackend(client, general, now), now
    client.close()


def _state(rnd: random.Random, now: float, plan: Plan) -> tuple[bytes, int]:
    """A saved one-limit state in the script's layout, and its TTL in ms."""
    lim = plan.limits[0]
    off_bounds = rnd.uniform(lim.min_rate * 0.5, lim.max_rate * 1.5)
    r = rnd.choice([lim.min_rate, lim.max_rate, off_bounds])
    t = rnd.choice([lim.burst, 0.0, -1.0, lim.burst * 1.5, rnd.uniform(-3, lim.burst * 2)])
    ts = now + rnd.choice([0.0, -0.01, -1.0, -100.0, 0.5, rnd.uniform(-5, 2)])
    tat = now + rnd.choice([0.0, -100.0, 0.05, 2.0, rnd.uniform(-10, 10)])
    expires = now + rnd.choice([-10.0, 3000.0, 3600.0, 4500.0, 10000.0, rnd.uniform(0, 8000)])
    cool = rnd.choice([0.0, now - 1, now, now + 0.3]) if rnd.random() < 0.3 else 0.0
    qu, q, qc = (now + 1, 3.0, 1.0) if rnd.random() < 0.1 else (0.0, 0.0, 0.0)
    name = "requests" if rnd.random() < 0.9 else "other"
    served = [float(rnd.randrange(5)) for _ in range(4)]  # the current slice and 3 before
    delivery = (now - rnd.uniform(0, 3), *served, rnd.choice([0.0, 4.0, 12.0]))  # , ceiling
    peak = rnd.choice([0.0, r, r * 1.02, r * 1.1])
    seq, epoch, credit = float(rnd.randrange(100)), rnd.randrange(10**15, 2 * 10**15), 50.0
    counts = (float(rnd.randrange(3)), float(rnd.randrange(3)), float(rnd.randrange(3)))
    head = struct.pack("<BB10d", 5, 1, seq, tat, expires, r, t, ts, credit, epoch, cool, qu)
    state = head + name.encode() + b"\0" + struct.pack("<12d", *delivery, q, qc, peak, *counts)
    # the tenant's name: none stored (the key's name holds it), or a long tenant's
    state += rnd.choice([b"", b"x" * 200]) + b"\0"
    state += _log(rnd, now)
    ttl = int((expires - now) * 1000) if expires > now else rnd.choice([1000, 5_000_000])
    return state, max(1, ttl)


def _log(rnd: random.Random, now: float) -> bytes:
    """A success log (delivery.LOG): none (a state saved before it), a few times some of
    which left the last second, or a full one within it."""
    kind = rnd.choice(["none", "few", "full"])
    if kind == "none":
        return b""
    if kind == "few":
        times = sorted(now - rnd.uniform(0, 2) for _ in range(rnd.randrange(6)))
    else:
        times = [now - 0.95 + 0.9 * i / LOG for i in range(LOG)]
    return struct.pack(f"<B{len(times)}d", len(times), *times)


def _plan(rnd: random.Random) -> Plan:
    lo = rnd.choice([0.001, 0.5, 1.0, 5.0])
    hi = lo * rnd.choice([1.0, 2.0, 20.0])
    burst = rnd.choice([0.5, 1.0, 3.0, 10.0])
    limit = LimitParams("requests", rnd.uniform(lo, hi), burst, lo, hi, rnd.choice([0.0, 1.0]), 0.5)
    return Plan(limits=(limit,), cooldown_multiplier=2.0, max_backoff=60.0)


def _cases(now: list[float], seed: int) -> Iterator[tuple[random.Random, Plan]]:
    """``CASES`` random plans, each at a new time (set in ``now``), and the generator."""
    rnd = random.Random(seed)
    for _ in range(CASES):
        now[0] = 1.7e9 + rnd.uniform(0, 1e6)
        yield rnd, _plan(rnd)


def _assert_same(
    pair: tuple[RedisBackend, RedisBackend, list[float]],
    rnd: random.Random,
    plan: Plan,
    method: str,
    value: AcquireRequest | Report,
) -> bool:
    """``method(value, plan)`` on a crafted state gives both scripts the same answer, the
    same stored bytes and the same TTL; whether the fast path answered it."""
    fast, general, now = pair
    state, ttl = _state(rnd, now[0], plan)
    probe: RedisBackend = fast.probe  # type: ignore[attr-defined]
    key = probe.keys_for("svc", "t")[0]
    probe.client.set(key, state, px=ttl)
    try:
        getattr(probe, method)(value, plan)
        answered = True
    except Exception:  # the general rules' error: not the fast path's case
        answered = False
    probe.client.delete(key)
    out = []
    for backend in (fast, general):
        key = backend.keys_for("svc", "t")[0]
        backend.client.set(key, state, px=ttl)
        answer = getattr(backend, method)(value, plan)
        out.append((answer, backend.client.get(key), backend.client.pttl(key)))
        backend.client.delete(key)
    (fast_out, general_out) = out
    assert fast_out[:2] == general_out[:2], (value, out)
    assert abs(fast_out[2] - general_out[2]) < 500, out  # (the TTLs are read apart)
    return answered


@pytest.mark.parametrize("seed", [1, 2])
def test_the_fast_acquire_decides_as_the_general_rules(
    pair: tuple[RedisBackend, RedisBackend, list[float]], seed: int
) -> None:
    answered = 0
    for rnd, plan in _cases(pair[2], seed):
        cost = rnd.choice([0.0, 0.5, 1.0, plan.limits[0].burst])
        answered += _assert_same(
            pair,
            rnd,
            plan,
            "acquire",
            AcquireRequest(
                "svc",
                "t",
                {"requests": cost},
                max_wait=rnd.choice([0.0, 0.05, 0.5, 5.0, 2000.0]),
                reserve=rnd.random() < 0.5,
                cooldown_wait=rnd.choice([None, 0.0, 1.0]),
                max_sleepers=rnd.choice([None, 0, 1, 2, 10]),
            ),
        )
    assert answered >= CASES // 5, answered  # (the fast path's own cases among them)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_fast_success_reports_as_the_general_rules(
    pair: tuple[RedisBackend, RedisBackend, list[float]], seed: int
) -> None:
    answered = 0
    for rnd, plan in _cases(pair[2], seed):
        feedback = rnd.choice(
            [
                Feedback(),
                Feedback(seq=rnd.randrange(100)),
                Feedback(adjust={"requests": 0.5}),
                Feedback(quotas={"requests": (3.0, 1.0)}),
            ]
        )
        answered += _assert_same(
            pair, rnd, plan, "report", Report(SUCCESS, "svc", "t", feedback=feedback)
        )
    assert answered >= CASES // 5, answered  # (the fast path's own cases among them)

"""A SQL store's ``claim_ahead``: one transaction decides a process's next acquires of a key
(``backends/sql_claims.py``), on SQLite and PostgreSQL, each "process" a backend of its own
over the test's fake clock (spawned and forked processes where it matters).

What must hold: the key never grants more than its limits, whoever claimed; a process that
asks seldom decides each acquire in its own transaction, as without claims; its own backoff
drops its claims; a slot too late to use is dropped, never sent late; a forked child never
uses its parent's slots; the URL sets it and bad values name the field."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from queue_ratelimit.async_limiter import AsyncLimiter
from queue_ratelimit.backends import open_backend
from queue_ratelimit.backends.postgres import PostgresBackend
from queue_ratelimit.backends.sql import SQLBackend
from queue_ratelimit.backends.sql_claims import KEEP_POOLS, MOST
from queue_ratelimit.backends.sqlite import SQLiteBackend
from queue_ratelimit.errors import ConfigError
from queue_ratelimit.limiter import Limiter
from tests.conftest import FakeClock
from tests.support import SVC, grants_across_processes

# 20 a second, a burst of 5, no climbing: what a fleet shares
STEADY = SVC.replace(
    rate_limit_per_sec=20.0, min_rate=20.0, max_rate=20.0, burst_size=5.0, max_wait=1.0
)
# plenty for every call of a test that asks in a tight loop
PLENTY = SVC.replace(rate_limit_per_sec=1000.0, min_rate=1000.0, max_rate=1000.0, burst_size=1000.0)


def _counting(cls: type[SQLBackend]) -> type[Any]:
    class Counting(cls):  # type: ignore[misc,valid-type]
        """Counts the store's decision transactions (``trips``)."""

        trips = 0

        def _apply_once(self, *args: Any, **kwargs: Any) -> Any:
            self.trips += 1
            return super()._apply_once(*args, **kwargs)

    return Counting


Make = Callable[..., Any]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The store's URL and a key prefix of the test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'limiter.db'}", "qrltest"
    else:
        yield request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_prefix")


@pytest.fixture
def make(store: tuple[str, str], clock: FakeClock) -> Iterator[Make]:
    """Backends of one store (each another process's view), counting their transactions."""
    url, prefix = store
    made: list[Any] = []

    def build(claim_ahead: float = 0.25) -> Any:
        if url.startswith("sqlite:///"):
            backend = _counting(SQLiteBackend)(
                url[len("sqlite:///") :], prefix=prefix, clock=clock, claim_ahead=claim_ahead
            )
        else:
            backend = _counting(PostgresBackend)(
                url, prefix=prefix, clock=clock, claim_ahead=claim_ahead
            )
        made.append(backend)
        return backend

    yield build
    for backend in made:
        getattr(backend, "close", lambda: None)()


def _spans_within_the_limit(times: list[float], burst: float, rate: float) -> bool:
    """No span of the calls' times holds more than ``burst + rate * span`` (one more for a
    call handed out up to one step of the test after its slot)."""
    times = sorted(times)
    return all(
        j - i + 1 <= burst + rate * (times[j] - times[i]) + 1 + 1e-9
        for i in range(len(times))
        for j in range(i, len(times))
    )


def _three_processes_asking(make: Make, clock: FakeClock, claim_ahead: float) -> Any:
    """3 s of three processes each asking every 10 ms (5x what the key allows, refusals
    reserving nothing): the times their granted calls go, and the acquires asked."""
    limiters = [Limiter(make(claim_ahead), {"svc": STEADY}) for _ in range(3)]
    sent: list[float] = []  # each grant's call: handed out now, sent after its wait
    for _ in range(300):
        for limiter in limiters:
            decision = limiter.acquire("svc", reserve=False)
            if decision.granted:
                sent.append(clock.now + decision.wait)
        clock.advance(0.01)
    return sent, sum(cast(Any, limiter.backend).trips for limiter in limiters)


def test_claimed_slots_never_grant_more_than_the_limit(make: Make, clock: FakeClock) -> None:
    sent, trips = _three_processes_asking(make, clock, 0.25)
    assert _spans_within_the_limit(sent, STEADY.burst_size, STEADY.rate_limit_per_sec)
    clock.advance(STEADY.max_wait + 1.0)  # (the line gone: the same 3 s without claims)
    exact, exact_trips = _three_processes_asking(make, clock, 0.0)
    assert len(sent) >= 0.9 * len(exact)  # served at the rate, not lost to claims
    assert trips < exact_trips  # some grants decided several per transaction


def test_a_process_that_asks_seldom_decides_each_acquire_as_without_claims(
    make: Make, clock: FakeClock
) -> None:
    claimed, exact = make(claim_ahead=0.05), make(claim_ahead=0.0)
    with_claims = Limiter(claimed, {"svc": STEADY})
    without = Limiter(exact, {"other": dataclasses.replace(STEADY, name="other")})
    for step in range(12):
        got, want = with_claims.acquire("svc"), without.acquire("other")
        assert (got.granted, got.wait, got.reason) == (want.granted, want.wait, want.reason)
        clock.advance(0.5 if step % 2 else 0.07)  # slower than 1 in 50 ms
    assert claimed.trips == exact.trips == 12


def test_a_tight_loop_is_served_from_one_claim_and_the_key_pays_every_slot(
    make: Make, clock: FakeClock
) -> None:
    backend = make(claim_ahead=0.05)
    limiter = Limiter(backend, {"svc": PLENTY})
    assert all(limiter.acquire("svc").granted for _ in range(100))  # the clock stands still
    assert backend.trips < 10  # one, then one claim of up to MOST
    left = limiter.snapshot("svc").limit().tokens
    assert left <= PLENTY.burst_size - 100  # every slot handed out was paid for


def test_threads_claiming_together_lose_no_slot(make: Make, clock: FakeClock) -> None:
    backend = make(claim_ahead=0.05)
    few = dataclasses.replace(
        PLENTY, burst_size=400.0, rate_limit_per_sec=0.001, min_rate=0.001, max_rate=0.001
    )
    limiter = Limiter(backend, {"svc": few})
    granted: list[int] = []

    def ask() -> None:
        granted.append(sum(limiter.acquire("svc", reserve=False).granted for _ in range(100)))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(granted) == 400  # 800 asks: the whole burst, every slot claimed handed out


def test_a_caller_that_may_wait_less_leaves_the_claimed_slots_to_the_others(
    make: Make, clock: FakeClock
) -> None:
    backend = make(claim_ahead=0.05)
    paced = dataclasses.replace(
        PLENTY, rate_limit_per_sec=100.0, min_rate=100.0, max_rate=100.0, burst_size=1.0
    )
    limiter = Limiter(backend, {"svc": dataclasses.replace(paced, max_wait=1.0)})
    limiter.acquire("svc")
    limiter.acquire("svc")  # claims the next slots, 10 ms apart
    refused = limiter.acquire("svc", max_wait=0.0, reserve=False)
    assert not refused.granted  # its slot is not now: the store says so
    trips = backend.trips
    later = limiter.acquire("svc")  # the claimed slot, still there
    assert later.granted and 0 < later.wait <= 0.05 and backend.trips == trips


def test_its_own_backoff_drops_its_claims(make: Make, clock: FakeClock) -> None:
    backend = make(claim_ahead=0.05)
    limiter = Limiter(backend, {"svc": PLENTY})
    limiter.acquire("svc")
    limiter.acquire("svc")  # claims the next slots
    trips = backend.trips
    assert limiter.acquire("svc").granted and backend.trips == trips  # from the claim
    limiter.on_backoff("svc", retry_after=5.0)
    after = limiter.acquire("svc")  # not a slot claimed before the 429: the cooldown
    assert not after.granted and after.reason == "cooldown"
    assert backend.trips == trips + 2  # the report, and this decision


def test_a_slot_too_late_to_use_is_dropped_not_sent(make: Make, clock: FakeClock) -> None:
    backend = make(claim_ahead=0.05)
    limiter = Limiter(backend, {"svc": PLENTY})
    limiter.acquire("svc")
    limiter.acquire("svc")  # claims the next slots, all due now
    clock.advance(0.06)  # past claim_ahead after them
    trips = backend.trips
    assert limiter.acquire("svc").granted
    assert backend.trips == trips + 1  # decided by the store, not from the stale claim


def test_another_process_s_backoff_reaches_this_one_at_its_next_claim(
    make: Make, clock: FakeClock
) -> None:
    mine, theirs = make(claim_ahead=0.05), make(claim_ahead=0.05)
    limiter = Limiter(mine, {"svc": PLENTY})
    limiter.acquire("svc")
    limiter.acquire("svc")  # claims slots due now
    Limiter(theirs, {"svc": PLENTY}).on_backoff("svc", retry_after=5.0)
    assert limiter.acquire("svc").granted  # a slot it claimed before the 429
    clock.advance(0.06)
    later = limiter.acquire("svc")
    assert not later.granted and later.reason == "cooldown"


def _acquire_in_child(backend: Any, results: Any) -> None:  # a forked process
    trips = backend.trips
    decision = Limiter(backend, {"svc": PLENTY}).acquire("svc")
    results.put((decision.granted, backend.trips - trips))


def test_a_forked_child_never_uses_its_parent_s_claims(make: Make, clock: FakeClock) -> None:
    backend = make(claim_ahead=0.05)
    limiter = Limiter(backend, {"svc": PLENTY})
    limiter.acquire("svc")
    limiter.acquire("svc")  # the parent claims slots
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_acquire_in_child, args=(backend, results))
    child.start()
    granted, trips = results.get(timeout=60)
    child.join(timeout=60)
    assert granted and trips == 1  # its own transaction: the parent's slots are the parent's


def test_processes_with_claims_still_share_one_burst(store: tuple[str, str]) -> None:
    url, prefix = store
    ten = SVC.replace(rate_limit_per_sec=0.001, min_rate=0.001, max_rate=0.001, burst_size=10.0)
    granted = grants_across_processes(url, prefix, ten, claim_ahead=0.05)
    assert granted == 10  # 80 asks over 4 processes: the burst's 10, claimed or not


def test_an_async_limiter_takes_claimed_slots(make: Make, clock: FakeClock) -> None:
    backend = make(claim_ahead=0.05)
    limiter = AsyncLimiter(backend, {"svc": PLENTY})

    async def loop() -> list[bool]:
        return [(await limiter.acquire("svc")).granted for _ in range(50)]

    assert all(asyncio.run(loop()))
    assert backend.trips < 10


def test_keys_that_are_not_claimable_decide_each_acquire(make: Make, clock: FakeClock) -> None:
    backend = make(claim_ahead=0.05)
    config = PLENTY.replace(max_concurrent=1000)  # leases: one transaction each
    limiter = Limiter(backend, {"svc": config})
    assert all(limiter.acquire("svc").granted for _ in range(20))
    assert backend.trips == 20


def test_a_url_sets_claim_ahead_and_keeps_libpq_s_parameters(tmp_path: Path) -> None:
    sqlite = open_backend(f"sqlite:///{tmp_path / 'a.db'}?claim_ahead=0.05")
    assert isinstance(sqlite, SQLiteBackend) and sqlite.path == str(tmp_path / "a.db")
    assert sqlite._claims is not None and sqlite._claims.ahead == 0.05
    pg = open_backend("postgresql://u@h:5/db?sslmode=disable&claim_ahead=0.1")
    assert isinstance(pg, PostgresBackend) and pg._claims is not None
    assert pg._conninfo == "postgresql://u@h:5/db?sslmode=disable"
    plain = open_backend(f"sqlite:///{tmp_path / 'b.db'}")
    assert isinstance(plain, SQLiteBackend) and plain._claims is None


@pytest.mark.parametrize(
    "url, field",
    [
        ("sqlite:///x.db?claim_ahead=soon", "url"),
        ("sqlite:///x.db?claim_ahead=2", "claim_ahead"),
        ("postgresql://u@h/db?claim_ahead=-1", "claim_ahead"),
    ],
)
def test_a_bad_claim_ahead_names_the_field(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_backend(url)
    assert caught.value.field == field


def test_claim_ahead_must_be_seconds(tmp_path: Path) -> None:
    for value in (True, "0.1", float("nan"), 1.5):
        with pytest.raises(ConfigError, match="claim_ahead"):
            SQLiteBackend(str(tmp_path / "c.db"), claim_ahead=value)  # type: ignore[arg-type]


def test_two_integrations_of_one_process_claim_apart(make: Make, clock: FakeClock) -> None:
    """Two integrations of one process claim apart: one's slots never answer the other."""
    backend = make(claim_ahead=0.05)
    other = dataclasses.replace(
        PLENTY,
        name="other",
        burst_size=2.0,
        rate_limit_per_sec=0.001,
        min_rate=0.001,
        max_rate=0.001,
    )
    limiter = Limiter(backend, {"svc": PLENTY, "other": other})
    for _ in range(20):
        limiter.acquire("svc")
    assert sum(limiter.acquire("other").granted for _ in range(10)) == 2


def test_a_process_meeting_many_tenants_keeps_only_the_busy_ones(
    make: Make, clock: FakeClock
) -> None:
    backend = make(claim_ahead=0.05)
    limiter = Limiter(backend, {"svc": STEADY})
    for n in range(KEEP_POOLS + 10):  # one acquire per tenant: each a key of its own
        limiter.acquire("svc", f"t{n}")
    assert len(backend._claims._pools) == KEEP_POOLS + 10
    clock.advance(MOST * 0.05 + 1.0)  # long enough that none would claim more than one
    limiter.acquire("svc", "new")
    assert len(backend._claims._pools) == 1  # the idle ones forgotten, the new one kept

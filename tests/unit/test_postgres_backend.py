"""``PostgresBackend`` beyond the shared behaviour suite (which runs on it too): processes
sharing one database, a server restarted under a running limiter, a row held by another
transaction, a pool, tables made only by ``migrate``, the URL and the bad arguments."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg_pool
import pytest

from queue_ratelimit.backends import open_backend
from queue_ratelimit.backends.postgres import PostgresBackend
from queue_ratelimit.cli import main as cli_main
from queue_ratelimit.errors import BackendUnavailable, ConfigError
from queue_ratelimit.limiter import Limiter
from tests.postgres_server import PgBouncerProcess, PostgresProcess, with_database
from tests.support import SVC, answers, grants_across_processes, new_prefix, wait_until

Make = Callable[..., PostgresBackend]

# a burst of 10 and next to no refill: exactly 10 grants, whoever asks
TEN = SVC.replace(rate_limit_per_sec=0.001, min_rate=0.001, max_rate=0.001, burst_size=10.0)


@pytest.fixture
def backends() -> Iterator[Make]:
    """Make ``PostgresBackend``s, closed when the test ends."""
    made: list[PostgresBackend] = []

    def make(*args: Any, **kwargs: Any) -> PostgresBackend:
        made.append(PostgresBackend(*args, **kwargs))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


def test_processes_sharing_a_database_share_its_limits(
    postgres_url: str, pg_prefix: str, backends: Make
) -> None:
    granted = grants_across_processes(postgres_url, pg_prefix, TEN)
    assert granted == 10  # 80 asks over 4 processes, one burst of 10 between them
    limiter = Limiter(backends(postgres_url, prefix=pg_prefix), {"svc": TEN})
    assert limiter.snapshot("svc").limit().tokens < 1


def test_threads_of_one_process_share_it_through_their_own_connections(
    postgres_url: str, pg_prefix: str, backends: Make
) -> None:
    limiter = Limiter(backends(postgres_url, prefix=pg_prefix), {"svc": TEN})
    granted: list[bool] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(10):
            decision = limiter.acquire("svc", reserve=False)
            with lock:
                granted.append(decision.granted)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(granted) == 40 and sum(granted) == 10


def test_a_pool_lends_the_connections(postgres_url: str, pg_prefix: str) -> None:
    with psycopg_pool.ConnectionPool(postgres_url, min_size=1, max_size=2, open=True) as pool:
        limiter = Limiter(PostgresBackend(pool=pool, prefix=pg_prefix), {"svc": TEN})
        assert sum(limiter.acquire("svc", reserve=False).granted for _ in range(15)) == 10
        assert limiter.snapshot("svc").exists
        assert pool.get_stats()["requests_num"] >= 16  # every call borrowed one
        with pool.connection() as conn:  # given back as it was lent
            assert not conn.autocommit
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.faults
@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_restarted_server_holds_the_outage_policy_then_recovers_without_a_restart(
    private_postgres: PostgresProcess, mode: str, backends: Make
) -> None:
    config = SVC.replace(on_backend_error=mode, fallback_processes=2, max_wait=5.0)
    backend = backends(private_postgres.url, lock_timeout=1.0, connect_timeout=2.0)
    limiter = Limiter(backend, {"svc": config}, probe_interval=0.05)
    assert limiter.acquire("svc").granted
    limiter.on_success("svc")
    private_postgres.stop()
    if mode == "closed":  # nothing granted, nothing raised but the typed refusal
        with pytest.raises(BackendUnavailable):
            limiter.acquire("svc")
    else:  # decided locally, at a share of the rate
        assert limiter.acquire("svc").granted
    limiter.on_success("svc")  # a report meanwhile is dropped, not raised
    private_postgres.start()
    wait_until(lambda: answers(limiter), timeout=30)
    snapshot = limiter.snapshot("svc")
    assert snapshot.exists  # the state from before the restart, kept by the database
    assert snapshot.limit().rate >= config.rate_limit_per_sec


LOCK_ROW = "SELECT 1 FROM qrl_keys WHERE scope = %s AND integration = 'svc' FOR UPDATE"


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_row_held_by_another_transaction_holds_the_outage_policy_after_lock_timeout(
    postgres_url: str, pg_prefix: str, mode: str, backends: Make
) -> None:
    config = SVC.replace(on_backend_error=mode, fallback_processes=2, max_wait=5.0)
    backend = backends(postgres_url, prefix=pg_prefix, lock_timeout=0.2)
    limiter = Limiter(backend, {"svc": config}, probe_interval=0.05)
    assert limiter.acquire("svc").granted
    with psycopg.connect(postgres_url) as other:  # a transaction holding the key's row
        assert other.execute(LOCK_ROW, (pg_prefix,)).fetchone() is not None
        if mode == "closed":
            with pytest.raises(BackendUnavailable):
                limiter.acquire("svc")
        else:
            assert limiter.acquire("svc").granted
        other.rollback()
    wait_until(lambda: answers(limiter), timeout=10)


def test_tables_are_made_by_migrate_only(postgres_url: str, backends: Make) -> None:
    scratch = with_database(postgres_url, "qrl_test_migrate")
    with psycopg.connect(scratch, autocommit=True) as conn:
        for table in ("qrl_keys", "qrl_integrations", "qrl_overrides"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    limiter = Limiter(backends(scratch, prefix=new_prefix()), {"svc": TEN})
    with pytest.raises(ConfigError) as caught:
        limiter.acquire("svc")
    assert "migrate" in str(caught.value)
    cli_main(["--store", scratch, "migrate"])
    cli_main(["--store", scratch, "migrate"])  # twice: idempotent
    assert limiter.acquire("svc").granted


def test_a_postgres_url_opens_the_database_and_hides_its_password() -> None:
    backend = open_backend("postgresql://qrl:s3cret@127.0.0.1:1/db", prefix="app1")
    assert isinstance(backend, PostgresBackend) and backend.prefix == "app1"
    assert "s3cret" not in backend.describe() and "127.0.0.1:1/db" in backend.describe()
    assert isinstance(open_backend("postgres://qrl@127.0.0.1:1/db"), PostgresBackend)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "conninfo"),
        ({"conninfo": "host=x", "pool": object()}, "conninfo"),
        ({"pool": object()}, "pool"),
        ({"conninfo": "host=x", "lock_timeout": 0}, "lock_timeout"),
        ({"conninfo": "host=x", "connect_timeout": -1}, "connect_timeout"),
        ({"conninfo": "not a = = conninfo"}, "conninfo"),
        ({"conninfo": "postgresql://qrl:s3cret%zz@127.0.0.1/db"}, "conninfo"),
        ({"conninfo": "host=x", "idle_ttl": 0}, "idle_ttl"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresBackend(**kwargs)
    assert caught.value.field == field
    assert "s3cret" not in str(caught.value)


def test_a_damaged_row_starts_afresh_instead_of_failing_the_worker(
    postgres_url: str, pg_prefix: str, backends: Make
) -> None:
    limiter = Limiter(backends(postgres_url, prefix=pg_prefix), {"svc": TEN})
    for _ in range(5):
        assert limiter.acquire("svc", reserve=False).granted  # 5 of the burst of 10 spent
    assert limiter.acquire("svc").granted
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            'UPDATE qrl_keys SET state = \'{"not": "a state"}\' WHERE scope = %s', (pg_prefix,)
        )
        conn.execute(
            "UPDATE qrl_integrations SET breaker = 'garbage' WHERE scope = %s", (pg_prefix,)
        )
    assert limiter.acquire("svc").granted  # a fresh key: its burst again
    assert limiter.snapshot("svc").limit().tokens == pytest.approx(9.0, abs=0.01)


def test_no_password_reaches_a_backend_error(backends: Make) -> None:
    backend = backends(
        "postgresql://qrl:s3cret@127.0.0.1:1/db", connect_timeout=2.0, prefix=new_prefix()
    )
    limiter = Limiter(backend, {"svc": SVC.replace(on_backend_error="closed")})
    with pytest.raises(BackendUnavailable) as caught:
        limiter.acquire("svc")
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(caught.value.__cause__)


def test_failures_reported_together_on_different_tenants_are_all_counted(
    postgres_url: str, pg_prefix: str, backends: Make
) -> None:
    """Tenants' keys are locked apart, their integration's breaker is shared: a report that
    finds the breaker changed under it runs again, with the breaker's row locked."""
    config = SVC.replace(breaker_failure_threshold=1000)
    limiter = Limiter(backends(postgres_url, prefix=pg_prefix), {"svc": config})

    def report(tenant: str) -> None:
        for _ in range(10):
            limiter.on_failure("svc", tenant)

    threads = [threading.Thread(target=report, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert limiter.snapshot("svc", "t0").breaker_failures == 40


@pytest.fixture
def pgbouncer(postgres_url: str) -> Iterator[PgBouncerProcess]:
    """A PgBouncer in transaction mode in front of the tests' database."""
    try:
        bouncer = PgBouncerProcess(postgres_url).start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield bouncer
    finally:
        bouncer.close()


def test_pgbouncer_in_transaction_mode_shares_the_limits_without_prepared_statements(
    pgbouncer: PgBouncerProcess, pg_prefix: str, backends: Make
) -> None:
    """Each transaction may run on another server connection: every setting is SET LOCAL,
    and with prepared statements off (PgBouncer 1.18 has none) nothing outlives it."""
    limiters = [
        Limiter(backends(pgbouncer.url, prefix=pg_prefix, prepare=False), {"svc": TEN})
        for _ in range(3)
    ]
    granted = [limiters[i % 3].acquire("svc", reserve=False).granted for i in range(30)]
    assert sum(granted) == 10  # one burst of 10, through the bouncer's pool of 4
    for limiter in limiters:
        limiter.on_success("svc")
    assert limiters[0].snapshot("svc").limit().tokens < 1

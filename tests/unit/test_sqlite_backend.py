"""``SQLiteBackend`` beyond the shared behaviour suite (which runs on it too): processes
sharing one file, a file locked by another process, the URL and the bad arguments."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from queue_ratelimit.backends import open_backend
from queue_ratelimit.backends.sqlite import SQLiteBackend
from queue_ratelimit.cli import main as cli_main
from queue_ratelimit.errors import BackendUnavailable, ConfigError
from queue_ratelimit.limiter import Limiter
from tests.support import SVC, answers, grants_across_processes, wait_until

# a burst of 10 and next to no refill: exactly 10 grants, whoever asks
TEN = SVC.replace(rate_limit_per_sec=0.001, min_rate=0.001, max_rate=0.001, burst_size=10.0)


def test_processes_sharing_a_file_share_its_limits(tmp_path: Path) -> None:
    path = str(tmp_path / "limiter.db")
    granted = grants_across_processes(f"sqlite:///{path}", "qrl", TEN)
    assert granted == 10  # 80 asks over 4 processes, one burst of 10 between them
    assert Limiter(SQLiteBackend(path), {"svc": TEN}).snapshot("svc").limit().tokens < 1


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes it
conn.execute("ROLLBACK")
"""


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_file_locked_by_another_process_holds_the_outage_policy_then_recovers(
    tmp_path: Path, mode: str
) -> None:
    path = str(tmp_path / "limiter.db")
    config = SVC.replace(on_backend_error=mode, fallback_processes=2, max_wait=5.0)
    limiter = Limiter(SQLiteBackend(path, busy_timeout=0.1), {"svc": config}, probe_interval=0.05)
    assert limiter.acquire("svc").granted
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        if mode == "closed":  # nothing granted, nothing raised but the typed refusal
            with pytest.raises(BackendUnavailable):
                limiter.acquire("svc")
        else:  # decided locally, at a share of the rate
            assert limiter.acquire("svc").granted
        limiter.on_success("svc")  # a report meanwhile is dropped, not raised
    finally:
        assert locker.stdin is not None
        locker.stdin.close()
        locker.wait(timeout=30)
        assert locker.stdout is not None
        locker.stdout.close()
    wait_until(lambda: answers(limiter), timeout=10)
    assert Limiter(SQLiteBackend(path), {"svc": config}).snapshot("svc").exists


def test_a_sqlite_url_opens_the_file_and_the_cli_migrates_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state.db"
    backend = open_backend(f"sqlite:///{path}", prefix="app1")
    assert isinstance(backend, SQLiteBackend) and backend.prefix == "app1"
    assert not path.exists()  # opened at the first call, not when built
    cli_main(["--store", f"sqlite:///{path}", "migrate"])
    assert "tables ready" in capsys.readouterr().out
    assert list(backend.scan()) == []  # the tables are there


def test_the_cli_says_a_missing_file_instead_of_making_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(SystemExit) as ended:
        cli_main(["--store", f"sqlite:///{path}", "status"])
    assert ended.value.code == 1
    said = capsys.readouterr().err
    assert "no such file" in said and "migrate" in said and said.count("\n") == 1
    assert not path.exists()  # a mistyped path is said, not made


@pytest.mark.parametrize(
    ("args", "field"),
    [((":memory:",), "path"), (("",), "path"), (("x.db",), "busy_timeout")],
)
def test_bad_arguments_name_the_field(tmp_path: Path, args: tuple[str], field: str) -> None:
    options: dict[str, Any] = {"busy_timeout": 0.0} if field == "busy_timeout" else {}
    where = str(tmp_path / args[0]) if args[0].endswith(".db") else args[0]
    with pytest.raises(ConfigError) as caught:
        SQLiteBackend(where, **options)
    assert caught.value.field == field


def test_a_damaged_row_starts_afresh_instead_of_failing_the_worker(tmp_path: Path) -> None:
    path = str(tmp_path / "limiter.db")
    limiter = Limiter(SQLiteBackend(path), {"svc": TEN})
    assert limiter.acquire("svc").granted
    for _ in range(5):
        assert limiter.acquire("svc", reserve=False).granted  # 6 of the burst of 10 spent
    with sqlite3.connect(path) as conn:  # another version's row, and a damaged breaker
        conn.execute('UPDATE qrl_keys SET state = \'{"not": "a state"}\'')
        conn.execute("UPDATE qrl_integrations SET breaker = 'garbage'")
    decision = limiter.acquire("svc")
    assert decision.granted  # a fresh key: its burst again
    assert limiter.snapshot("svc").exists
    assert limiter.snapshot("svc").limit().tokens == pytest.approx(9.0, abs=0.01)

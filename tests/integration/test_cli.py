"""The queue-ratelimit CLI against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from queue_ratelimit import Limiter, load_configs
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.cli import cli
from tests.support import RedisProcess


@pytest.fixture
def run(redis_url: str, key_prefix: str):  # type: ignore[no-untyped-def]
    def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
        result = CliRunner().invoke(
            cli,
            ["--redis", redis_url, "--prefix", key_prefix, *args],
            input=input,
            env={"COLUMNS": "200"},
        )
        return result.exit_code, result.output

    return invoke


@pytest.fixture
def limiter(redis_url: str, key_prefix: str) -> Limiter:
    return Limiter(RedisBackend(redis_url, prefix=key_prefix))


def test_status_lists_every_key_with_its_state(run, limiter: Limiter) -> None:  # type: ignore[no-untyped-def]
    limiter.acquire("notion", "ws:1")
    limiter.on_backoff("notion", "ws:1", retry_after=30.0)
    limiter.acquire("github")
    code, out = run("status", "--json")
    assert code == 0, out
    rows = {(r["integration"], r["tenant"]): r for r in json.loads(out)}
    assert set(rows) == {("notion", "ws:1"), ("github", None)}
    cooling = rows[("notion", "ws:1")]
    assert cooling["rate"] == pytest.approx(1.0)  # 2.0 halved
    assert 29 < cooling["cooldown_left"] <= 30
    assert cooling["breaker"] == "closed"
    code, out = run("status", "github", "--json")
    assert [r["integration"] for r in json.loads(out)] == ["github"]
    code, out = run("status")
    assert code == 0 and "notion" in out and "ws:1" in out


def test_reset_asks_then_forgets_the_key(run, limiter: Limiter) -> None:  # type: ignore[no-untyped-def]
    limiter.on_backoff("notion", "ws-1", retry_after=30.0)
    code, out = run("reset", "notion", "--tenant", "ws-1", input="n\n")
    assert code != 0 and limiter.snapshot("notion", "ws-1").exists  # declined: nothing done
    code, out = run("reset", "notion", "--tenant", "ws-1", "--yes")
    assert code == 0, out
    assert not limiter.snapshot("notion", "ws-1").exists


def test_reset_without_a_tenant_resets_every_key_of_the_integration(run, limiter: Limiter) -> None:  # type: ignore[no-untyped-def]
    for tenant in (None, "ws-1", "ws-2"):
        limiter.on_backoff("notion", tenant, retry_after=30.0)
    limiter.on_backoff("github", "ws-1", retry_after=30.0)
    code, out = run("reset", "notion", "--yes")
    assert code == 0 and "notion (3 keys)" in out, out
    assert not any(limiter.snapshot("notion", t).exists for t in (None, "ws-1", "ws-2"))
    assert limiter.snapshot("github", "ws-1").exists  # another integration's key stays
    code, out = run("reset", "notion", "--tenant", "typo", "--yes")
    assert code == 1 and "no such key: notion:typo" in out


def test_breaker_open_and_close(run, limiter: Limiter) -> None:  # type: ignore[no-untyped-def]
    code, out = run("breaker", "open", "slack", "--seconds", "120", "--yes")
    assert code == 0, out
    snap = limiter.snapshot("slack")
    assert snap.breaker == "open" and 119 < snap.breaker_wait <= 120
    assert limiter.acquire("slack").reason == "breaker_open"
    code, out = run("breaker", "close", "slack", "--yes")
    assert code == 0 and limiter.snapshot("slack").breaker == "closed"


def test_config_validate_names_the_bad_field_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "queue-ratelimit.toml"
    bad.write_text("[notion]\nmax_rate = -2.0\n")
    result = subprocess.run(
        [sys.executable, "-m", "queue_ratelimit.cli", "config", "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "notion" in result.stderr and "max_rate" in result.stderr and "-2.0" in result.stderr
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"notion": {"max_rate": 2.5, "rate_limit_per_sec": 2.0}}))
    result = subprocess.run(
        [sys.executable, "-m", "queue_ratelimit.cli", "config", "validate", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_config_show_prints_the_merged_configuration(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out = run("config", "show", "notion")
    assert code == 0
    assert json.loads(out)["notion"]["max_rate"] == 3.0


def test_top_refreshes_with_fleet_rates(run, limiter: Limiter) -> None:  # type: ignore[no-untyped-def]
    limiter.on_backoff("notion", "ws-1", retry_after=30.0)
    code, out = run("top", "notion", "--interval", "0.1", "--iterations", "2")
    assert code == 0, out
    assert "requeues/s" in out and "ws-1" in out
    assert limiter.stats("notion") == {"backoffs": 1}


def test_the_demo_command_runs_end_to_end(tmp_path: Path) -> None:
    chart = tmp_path / "rate.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "queue_ratelimit.cli",
            "demo",
            "--tasks",
            "60",
            "--plot",
            str(chart),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "lost 0" in result.stdout and "duplicates 0" in result.stdout
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_the_exporter_never_prints_the_redis_password() -> None:
    from queue_ratelimit.backends import redacted as _redacted

    assert _redacted("redis://user:s3cret@redis:6380/1") == "redis://user:***@redis:6380/1"
    assert "s3cret" not in _redacted("redis://:s3cret@redis/0")
    assert _redacted("redis://redis:6379/0") == "redis://redis:6379/0"


def _cli(redis_url: str, prefix: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``queue-ratelimit`` as an operator runs it: a process of its own in ``cwd``, with no
    ``QUEUE_RATELIMIT_*`` variable (so no config file or override of the workers')."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_RATELIMIT")}
    command = [sys.executable, "-m", "queue_ratelimit.cli", "--redis", redis_url]
    return subprocess.run(
        [*command, "--prefix", prefix, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "120", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_in_an_empty_directory_lists_and_resets_what_workers_wrote(
    redis_url: str, tmp_path: Path
) -> None:
    from tests.integration.celery_harness import capp, celery_rig, wait_all

    with celery_rig("redis", redis_url, limit=100) as rig:
        rig.start_worker("w", [capp.NOTION], concurrency=4)
        ids = [rig.send("tests.per_tenant", [f"ws-{i % 3}", i], capp.NOTION) for i in range(12)]
        assert all(isinstance(v, dict) for v in wait_all(rig.results(ids), timeout=60))
        name = capp.NOTION  # an integration of the workers' own config, unknown here
        listed = _cli(rig.limiter_url, capp.PREFIX, tmp_path, "status", name, "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {row["tenant"]: row for row in json.loads(listed.stdout)}
        assert set(rows) == {"ws-0", "ws-1", "ws-2"}
        for row in rows.values():  # described by what the workers stored: their bounds
            assert (row["min_rate"], row["max_rate"]) == (0.5, 50.0)
            assert row["min_rate"] <= row["rate"] <= row["max_rate"]
        table = _cli(rig.limiter_url, capp.PREFIX, tmp_path, "status", "--sort", "rate")
        assert table.returncode == 0 and "ws-1" in table.stdout and "3 keys" in table.stdout
        typo = _cli(rig.limiter_url, capp.PREFIX, tmp_path, "status", name + "x")
        assert typo.returncode == 1 and f"did you mean {name!r}?" in typo.stderr
        assert typo.stderr.count("\n") == 1
        reset = _cli(rig.limiter_url, capp.PREFIX, tmp_path, "reset", name, "--yes")
        assert reset.returncode == 0 and f"reset {name} (3 keys)" in reset.stdout
        after = _cli(rig.limiter_url, capp.PREFIX, tmp_path, "status", name)
        assert after.returncode == 0 and f"no keys of {name}" in after.stdout


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (
            "redis://127.0.0.1:1/0",
            "cannot reach Redis at redis://127.0.0.1:1/0: connection refused",
        ),
        ("redis://{server}/99", "no such database"),  # the suite's server, a database it lacks
        ("redis://:wrong@{server}/0", "refused the credentials"),  # it has no password
        ("redis//host", "url"),
        ("postgresql://postgres:wrong@127.0.0.1:1/postgres", "is the server up"),
    ],
)
def test_each_operator_error_is_one_line_with_exit_1(
    url: str, says: str, redis_url: str, tmp_path: Path
) -> None:
    from urllib.parse import urlsplit

    done = _cli(url.format(server=urlsplit(redis_url).netloc), "qrl", tmp_path, "status")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    assert "wrong" not in done.stderr  # never the password


def test_the_exporter_without_its_extra_says_what_to_install(  # type: ignore[no-untyped-def]
    run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "queue_ratelimit.metrics", raising=False)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as when it is not installed
    code, out = run("exporter", "--port", "0")
    assert code == 1 and "queue_ratelimit[prometheus]" in out
    assert "Traceback" not in out


def test_an_empty_listing_says_where_it_looked(run) -> None:  # type: ignore[no-untyped-def]
    code, out = run("status")
    assert code == 0 and "no limiter keys in redis://" in out and "start line" in out


def test_a_breaker_forced_open_before_any_key_shows(run) -> None:  # type: ignore[no-untyped-def]
    assert run("breaker", "open", "github", "--seconds", "600", "--yes")[0] == 0
    code, out = run("status", "github")
    assert code == 0 and "no keys of github" in out
    assert "breaker of github: open" in out and "paused" in out
    code, out = run("status", "github", "--json")
    (row,) = json.loads(out)
    assert code == 0 and row["level"] == "breaker" and row["breaker"] == "open"
    assert 0 < row["breaker_wait"] <= 600
    assert run("breaker", "close", "github", "--yes")[0] == 0
    assert "breaker of" not in run("status", "github")[1]
    assert json.loads(run("status", "github", "--json")[1]) == []


def test_status_shows_the_first_keys_by_the_sort_and_counts_the_rest(run, limiter: Limiter) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        limiter.acquire("notion", f"ws-{i}")
    limiter.on_backoff("notion", "ws-3", retry_after=30.0)  # the rate halves: the lowest
    code, out = run("status", "notion", "--sort", "rate", "--limit", "4")
    assert code == 0, out
    assert "5 keys" in out and "1 more" in out and "ws-3" not in out  # busiest first
    code, out = run("status", "notion", "--sort", "size")
    assert code == 2 and "size" in out  # a usage error


def test_the_tools_read_many_keys_after_the_server_lost_its_scripts(
    private_redis: RedisProcess,
) -> None:
    private_redis.start()
    backend = RedisBackend(private_redis.url, prefix="qrl-noscript")
    limiter = Limiter(backend)
    for tenant in ("a", "b"):
        limiter.acquire("notion", tenant)
    backend.client.script_flush()  # as a restarted server has none
    plan = limiter._prepare("notion").plan
    assert [snap.exists for snap in backend.snapshots("notion", ["a", "b", "c"], plan)] == [
        True,
        True,
        False,
    ]


def test_status_shows_the_integration_wide_level_of_a_chain(  # type: ignore[no-untyped-def]
    run, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "chain.toml"
    path.write_text(
        "[shop]\nrate_limit_per_sec = 5.0\nmax_rate = 5.0\n"
        "[shop.app_limit]\nrate_limit_per_sec = 8.0\nburst_size = 2.0\n"
        "min_rate = 1.0\nmax_rate = 8.0\n"
    )
    configs = load_configs(path)
    limiter = Limiter(RedisBackend(redis_url, prefix=key_prefix), configs)
    limiter.acquire("shop", "a")
    limiter.on_backoff("shop", "b", retry_after=20.0, level="app")
    code, out = run("--config", str(path), "status")
    assert code == 0, out
    assert "all tenants of shop: 4.00/s" in out  # 8/s halved by the app's 429
    assert "cooling down" in out
    code, out = run("--config", str(path), "status", "--json")
    assert code == 0, out
    (app,) = [row for row in json.loads(out) if row.get("level") == "app"]
    assert (app["integration"], app["tenant"], app["rate"]) == ("shop", None, 4.0)
    assert app["cooldown_left"] > 0

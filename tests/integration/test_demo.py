"""The end-to-end demo: a real Celery worker, a real HTTP upstream, memory and Redis state."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from typing import Any

import pytest
import redis
from rich.console import Console

from queue_ratelimit.demo import DemoSummary, run_demo
from queue_ratelimit.demo import run as demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(**options: Any) -> tuple[DemoSummary, str]:
    out = io.StringIO()
    console = Console(file=out, width=120)
    summary = run_demo(tasks=120, hidden_limit=20, seconds_budget=45, console=console, **options)
    return summary, out.getvalue()


def _assert_every_task_ran_once(summary: DemoSummary) -> None:
    assert summary.tasks == summary.completed == 120
    assert summary.failed == 0
    assert summary.lost == 0
    assert summary.duplicates == 0
    assert summary.ok
    for name, ratio in summary.ratio.items():
        # the upstream enforces the limit: no integration can beat it (a window's slack aside)
        assert 0 < ratio <= 1.1, (name, summary)


def test_demo_runs_every_task_once_and_draws_the_rate(tmp_path: Path) -> None:
    png = tmp_path / "rate.png"
    summary, output = _run(plot=png)
    _assert_every_task_ran_once(summary)
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "queue_ratelimit demo: 120 tasks" in output
    for header in ("integration", "achieved/s", "hidden limit/s", "429s", "requeues"):
        assert header in output
    assert "notion" in output and "github" in output
    assert "lost 0 · duplicates 0 · failed 0" in output


def test_demo_on_dramatiq_runs_every_task_once() -> None:
    summary, output = _run(framework="dramatiq")
    _assert_every_task_ran_once(summary)
    assert "lost 0 · duplicates 0 · failed 0" in output


def test_demo_runs_a_fleet_on_redis_and_deletes_its_keys(
    redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    summary, _ = _run(redis_url=redis_url, redis_prefix=key_prefix, workers=2)
    _assert_every_task_ran_once(summary)  # on two worker processes, a Redis broker
    assert list(redis_client.scan_iter(match=f"{{{key_prefix}:*")) == []
    assert list(redis_client.scan_iter(match=f"{key_prefix}*")) == []  # broker keys, events


def test_demo_without_matplotlib_fails_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "matplotlib" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(demo, "_open_limiter", _must_not_start)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        run_demo(plot=tmp_path / "rate.png")


def _must_not_start(*args: Any) -> Any:
    raise AssertionError("the demo started although it cannot plot")


@pytest.mark.parametrize("framework", ["rq", "huey"])
def test_demo_names_the_frameworks_it_supports(framework: str) -> None:
    with pytest.raises(ValueError, match=r"use one of \('celery', 'dramatiq'\)"):
        run_demo(framework=framework)


def test_demo_over_budget_fails_clearly_and_leaves_no_messages() -> None:
    from kombu.transport.memory import Channel

    with pytest.raises(TimeoutError, match=r"did not finish within seconds_budget=0\.5"):
        run_demo(tasks=40, seconds_budget=0.5, console=Console(file=io.StringIO()))
    assert all(Channel.queues[name].qsize() == 0 for name in demo.INTEGRATIONS)

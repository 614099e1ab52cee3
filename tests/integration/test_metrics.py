"""Prometheus: counters from a real prefork worker's children, gauges from the shared state."""

from __future__ import annotations

import dataclasses
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from queue_ratelimit import Limiter, MemoryBackend
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.metrics import EventMetrics, serve
from tests.integration.celery_harness import capp, celery_rig, wait_all
from tests.integration.rq_harness import jobs, rq_rig
from tests.support import RedisProcess, free_port, wait_until


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_the_exporter_adds_up_two_prefork_children_and_reads_the_shared_state(
    redis_url: str, tmp_path: Path
) -> None:
    with celery_rig("redis", redis_url, limit=100) as rig:
        rig.start_worker(
            "w1",
            [capp.NOTION],
            concurrency=2,
            pool="prefork",
            QRL_METRICS="1",
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
        )
        ids = [rig.send("tests.slow", [0.3], capp.NOTION) for _ in range(20)]  # busy both children
        assert wait_all(rig.results(ids), timeout=120) == ids
        pids = {p.stem.split("_")[-1] for p in tmp_path.glob("counter_*.db")}
        port = free_port()
        backend = RedisBackend(redis_url, prefix=capp.PREFIX)
        server = serve(Limiter(backend, capp.CONFIGS), backend, port, "127.0.0.1", str(tmp_path))
        try:
            samples = _scrape(port)
        finally:
            server.shutdown()
            server.server_close()
        integration = (("integration", capp.NOTION),)
        assert len(pids) >= 2  # the two children each counted their own tasks
        assert samples[("queue_ratelimit_acquired_total", integration)] == 20  # one grant a task
        key = (("integration", capp.NOTION), ("tenant", ""))
        assert (
            samples[("queue_ratelimit_rate", key)] == rig.limiter.snapshot(capp.NOTION).limit().rate
        )
        assert samples[("queue_ratelimit_breaker_state", integration)] == 0


def test_the_exporter_adds_up_the_work_horses_of_a_forking_rq_worker(
    redis_url: str, tmp_path: Path
) -> None:
    with rq_rig("fork", redis_url, limit=100) as rig:
        rig.start_worker([jobs.NOTION], QRL_METRICS="1", PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
        ids = [rig.enqueue(jobs.NOTION, jobs.sync_notion, i).id for i in range(12)]
        wait_until(lambda: rig.all_done(ids), timeout=60, every=0.2)
        assert set(rig.statuses(ids)) == {"finished"}
        assert len(list(tmp_path.glob("counter_*.db"))) >= 12  # a work horse per job counted
        port = free_port()
        server = serve(rig.limiter, rig.limiter.backend, port, "127.0.0.1", str(tmp_path))
        try:
            samples = _scrape(port)
        finally:
            server.shutdown()
            server.server_close()
        integration = (("integration", jobs.NOTION),)
        assert samples[("queue_ratelimit_acquired_total", integration)] == 12  # one per job
        key = (("integration", jobs.NOTION), ("tenant", ""))
        assert (
            samples[("queue_ratelimit_rate", key)] == rig.limiter.snapshot(jobs.NOTION).limit().rate
        )


def test_event_counters_and_the_wait_histogram(clock) -> None:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    metrics = EventMetrics(registry).connect()
    try:
        config = dataclasses.replace(capp.CONFIGS[capp.NOTION], name="notion")
        limiter = Limiter(MemoryBackend(clock=clock), {"notion": config})
        limiter.acquire("notion")
        limiter.acquire("notion", max_wait=5.0)  # granted after a wait of one interval
        limiter.acquire("notion", max_wait=0.0)  # throttled: reserved
        limiter.on_backoff("notion", retry_after=3.0)
        limiter.on_failure("notion")
    finally:
        metrics.disconnect()
    value = registry.get_sample_value
    assert value("queue_ratelimit_acquired_total", {"integration": "notion"}) == 2
    assert (
        value("queue_ratelimit_throttled_total", {"integration": "notion", "reason": "rate"}) == 1
    )
    assert (
        value("queue_ratelimit_backoffs_total", {"integration": "notion", "decreased": "true"}) == 1
    )
    assert value("queue_ratelimit_wait_seconds_count", {"integration": "notion"}) == 2
    assert value("queue_ratelimit_wait_seconds_sum", {"integration": "notion"}) == pytest.approx(
        0.2
    )


def test_the_grafana_dashboard_only_uses_metrics_the_exporter_serves(
    redis_url: str, key_prefix: str
) -> None:
    import json
    import re

    backend = RedisBackend(redis_url, prefix=key_prefix)
    limiter = Limiter(backend, {"svc": dataclasses.replace(capp.CONFIGS[capp.NOTION], name="svc")})
    limiter.on_backoff("svc", retry_after=1.0)
    registry = CollectorRegistry()
    EventMetrics(registry)
    from queue_ratelimit.metrics import StateCollector

    registry.register(StateCollector(limiter, backend))
    served = set()
    for family in registry.collect():
        served.add(family.name)
        served.update(sample.name for sample in family.samples)
    dashboard = json.loads(
        (Path(__file__).parents[2] / "dashboards/queue_ratelimit.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    suffix = re.compile(r"_(bucket|count|sum|total|created)$")
    used = {suffix.sub("", n) for e in exprs for n in re.findall(r"queue_ratelimit_\w+", e)}
    served = {suffix.sub("", n) for n in served}
    assert used and not used - served, used - served


def test_the_exporter_answers_200_with_the_shared_state_down_and_says_so_once(
    private_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    private_redis.start()
    backend = RedisBackend(private_redis.url, prefix="qrl-exporter")
    limiter = Limiter(backend, capp.CONFIGS)
    limiter.acquire(capp.NOTION, "ws-1")
    port = free_port()
    server = serve(limiter, backend, port, "127.0.0.1")
    try:
        up = ("queue_ratelimit_backend_up", ())
        assert _scrape(port)[up] == 1
        private_redis.stop()
        with caplog.at_level(logging.WARNING, logger="queue_ratelimit.metrics"):
            down = [_scrape(port) for _ in range(3)]  # 200 each time (urlopen raises else)
        assert [samples[up] for samples in down] == [0, 0, 0]
        assert not any(name == "queue_ratelimit_rate" for name, _ in down[0])
        assert len([r for r in caplog.records if "answers again" in r.getMessage()]) == 1
        private_redis.start()
        assert wait_until(lambda: _scrape(port)[up] == 1, timeout=30, every=0.2)
    finally:
        server.shutdown()
        server.server_close()


def test_the_exporter_reports_every_integration_in_the_store_and_its_busiest_tenants(
    redis_url: str, key_prefix: str
) -> None:
    from queue_ratelimit.metrics import StateCollector

    writer = Limiter(RedisBackend(redis_url, prefix=key_prefix), capp.CONFIGS)  # the workers
    for i in range(30):
        writer.acquire(capp.NOTION, f"ws-{i}")
    writer.acquire(capp.NOTION)
    backend = RedisBackend(redis_url, prefix=key_prefix)
    collector = StateCollector(Limiter(backend, {}), backend, max_tenants=3)  # no config
    registry = CollectorRegistry()
    registry.register(collector)

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client import generate_latest

        text = generate_latest(registry).decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    scrape()  # the first scrape: the counts to measure activity from
    for _ in range(5):
        writer.count(capp.NOTION, "requeues", "ws-7")
    writer.on_backoff(capp.NOTION, "ws-21", retry_after=5.0)
    for _ in range(4):  # ws-13 owes tokens to reservations
        writer.acquire(capp.NOTION, "ws-13", max_wait=0.0)
    samples = scrape()
    integration = (("integration", capp.NOTION),)
    assert samples[("queue_ratelimit_keys", integration)] == 31  # over all tenants
    assert samples[("queue_ratelimit_tenants_not_reported", integration)] == 27
    assert samples[("queue_ratelimit_keys_cooling_down", integration)] == 1
    assert samples[("queue_ratelimit_owed_tokens", integration)] > 0
    requeues = (("event", "requeues"), *integration)  # (labels sorted by name)
    assert samples[("queue_ratelimit_fleet_events_total", requeues)] == 5
    reported = {
        dict(labels)["tenant"] for name, labels in samples if name == "queue_ratelimit_rate"
    }
    assert reported == {"", "ws-7", "ws-21", "ws-13"}  # the integration's key and the busiest

"""docker-compose.yml's apps (deploy/app) run end to end without Docker; the file itself is
checked in tests/unit/test_compose_file.py."""

from __future__ import annotations

import importlib
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
import requests
import yaml

from queue_ratelimit import signals
from queue_ratelimit.testing import HiddenLimitUpstream
from queue_ratelimit.testing import main as upstream_main
from tests.support import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
APP_MODULES = ("settings", "celery_app", "dramatiq_actors", "rq_jobs", "rq_settings", "producer")


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


# -- the upstream entry point -------------------------------------------------------------


def test_the_upstream_entry_point_serves_until_sigterm() -> None:
    port = free_port()
    command = [sys.executable, "-m", "queue_ratelimit.testing", "--port", str(port)]
    with subprocess.Popen(
        [*command, "--limit", "1", "--window", "30", "--dialect", "retry-after"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith(f"serving http://127.0.0.1:{port}")
            first = requests.get(f"http://127.0.0.1:{port}/crm/a", timeout=5)
            second = requests.get(f"http://127.0.0.1:{port}/crm/b", timeout=5)
            other = requests.get(f"http://127.0.0.1:{port}/helpdesk/c", timeout=5)
            assert [first.status_code, second.status_code, other.status_code] == [200, 429, 200]
            assert 0 < int(second.headers["Retry-After"]) <= 30
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize(
    "argv",
    [["--limit", "0"], ["--window", "nan"], ["--port", "70000"], ["--dialect", "soap"]],
)
def test_the_upstream_entry_point_rejects_invalid_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        upstream_main(argv)
    assert exited.value.code == 2


def test_the_upstream_entry_point_exits_1_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit) as exited:
            upstream_main(["--port", str(taken.getsockname()[1])])
    assert exited.value.code == 1


# -- the apps, without Docker -----------------------------------------------------------------


def test_the_producer_keeps_its_rate_and_takes_turns() -> None:
    from deploy.app.producer import produce

    now = [0.0]
    sent: list[tuple[str, str, int, float]] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    enqueue = {
        f: (lambda i, n, f=f: sent.append((f, i, n, now[0]))) for f in ("celery", "dramatiq", "rq")
    }
    assert produce(enqueue, 10.0, 12, clock=lambda: now[0], sleep=sleep, echo=print) == 12
    assert [(f, i) for f, i, _, _ in sent[:6]] == [
        ("celery", "crm"),
        ("dramatiq", "crm"),
        ("rq", "crm"),
        ("celery", "helpdesk"),
        ("dramatiq", "helpdesk"),
        ("rq", "helpdesk"),
    ]
    assert [n for _, _, n, _ in sent] == list(range(12))
    assert sent[-1][3] == pytest.approx(1.1)  # 10/s: the 12th at 1.1 s


@pytest.fixture
def apps(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, ModuleType], HiddenLimitUpstream]]:
    """The deploy apps imported afresh against the test Redis (every broker's keys under the
    test's prefix) and a local upstream; the global state they touch is put back afterwards."""
    import dramatiq.broker
    from celery import _state

    from queue_ratelimit import logs

    upstream = HiddenLimitUpstream(limit=50).start()
    env = {
        "UPSTREAM_URL": upstream.url,
        "QUEUE_RATELIMIT_REDIS_URL": redis_url,
        "QUEUE_RATELIMIT_PREFIX": key_prefix,
        "QUEUE_RATELIMIT_CONFIG": str(ROOT / "deploy" / "queue-ratelimit.toml"),
        "CELERY_BROKER_URL": redis_url,
        "DRAMATIQ_BROKER_URL": redis_url,
        "DRAMATIQ_NAMESPACE": f"{key_prefix}-dramatiq",
        "RQ_REDIS_URL": redis_url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    previous_broker = dramatiq.broker.global_broker
    previous_app, previous_default = _state._tls.current_app, _state.default_app
    logging_was_installed = bool(logs._installed)
    root_level = logging.getLogger().level  # Celery's in-process worker raises it
    names = [f"deploy.app.{m}" for m in APP_MODULES]
    for name in names:
        sys.modules.pop(name, None)
    try:
        modules = {m: importlib.import_module(f"deploy.app.{m}") for m in APP_MODULES}
        celery_keys = {"global_keyprefix": f"{key_prefix}-celery:"}
        modules["celery_app"].app.conf.broker_transport_options = celery_keys
        yield modules, upstream
    finally:
        for name in names:
            sys.modules.pop(name, None)
        dramatiq.broker.global_broker = previous_broker
        _state._tls.current_app, _state.default_app = previous_app, previous_default
        if not logging_was_installed:
            logs.uninstall_logging()
        logging.getLogger().setLevel(root_level)
        upstream.stop()
        client = redis.Redis.from_url(redis_url)
        stale = [
            key
            for framework in ("dramatiq", "celery")
            for key in client.scan_iter(match=f"{key_prefix}-{framework}*")
        ]
        if stale:
            client.delete(*stale)
        client.close()


def test_the_celery_app_routes_rate_limited_tasks_to_their_integration_queues(
    apps: tuple[dict[str, ModuleType], HiddenLimitUpstream], key_prefix: str
) -> None:
    from queue_ratelimit.backends.redis import RedisBackend
    from queue_ratelimit.integrations.celery import (
        BreakerStep,
        RateLimitedTask,
        integration_router,
        limiter_for,
    )

    celery_app = apps[0]["celery_app"]
    app = celery_app.app
    for task, integration in (
        (celery_app.sync_contact, "crm"),
        (celery_app.sync_ticket, "helpdesk"),
    ):
        assert isinstance(task, RateLimitedTask) and task.integration == integration
        assert integration_router(task.name, (), {}, {}, task=task) == {"queue": integration}
    assert integration_router in app.conf.task_routes
    assert BreakerStep in app.steps["consumer"]
    backend = limiter_for(app).backend
    assert isinstance(backend, RedisBackend) and backend.prefix == key_prefix
    assert not [n for n in vars(apps[0]["rq_settings"]) if n.isupper()]  # RQ reads those


def test_the_producer_feeds_all_three_frameworks_and_each_call_is_served_once(
    apps: tuple[dict[str, ModuleType], HiddenLimitUpstream], redis_url: str
) -> None:
    from celery.contrib.testing.worker import start_worker

    from queue_ratelimit.integrations.rq import RateLimitedSimpleWorker, limiter_for

    modules, upstream = apps
    assert modules["producer"].main(["--count", "6", "--rate", "100"]) == 6

    connection = redis.Redis.from_url(redis_url)
    queues = [modules["rq_jobs"].Queue(name, connection=connection) for name in ("crm", "helpdesk")]
    rq_ids = {job_id for queue in queues for job_id in queue.job_ids}
    grants: list[tuple[str, str]] = []

    def granted(sender: object, **fields: Any) -> None:
        grants.append((fields["integration"], fields["task_name"]))

    signals.acquired.connect(granted)
    try:
        assert len(rq_ids) == 2
        # the limiter as the worker would build it, given in code: this test process also
        # holds other tests' job modules, whose integrations the deploy config lacks
        limiter = limiter_for(connection=connection)
        RateLimitedSimpleWorker(queues, connection=connection, limiter=limiter).work(burst=True)
        _run_dramatiq(modules["dramatiq_actors"].broker)
        app = modules["celery_app"].app
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["crm", "helpdesk"]):
            wait_until(lambda: sum(upstream.served.values()) >= 6, timeout=10, every=0.05)
    finally:
        signals.acquired.disconnect(granted)
        _forget_rq(connection, rq_ids)

    assert sum(upstream.served.values()) == 6 and upstream.count(200) == 6
    assert upstream.served_once(set(upstream.served))
    assert rq_ids <= set(upstream.served)
    # each task took its slot from the shared limiter before its one call (which used it)
    assert sorted(grants) == [
        ("crm", "compose.sync_contact"),
        ("crm", "compose.sync_contact"),
        ("crm", "deploy.app.rq_jobs.sync_contact"),
        ("helpdesk", "compose.sync_ticket"),
        ("helpdesk", "compose.sync_ticket"),
        ("helpdesk", "deploy.app.rq_jobs.sync_ticket"),
    ]


def _run_dramatiq(broker: Any) -> None:
    """Run the queued messages in an in-process worker."""
    from dramatiq import Worker

    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        for queue in ("crm", "helpdesk"):
            broker.join(queue, timeout=10_000)
    finally:
        worker.stop()


def _forget_rq(connection: redis.Redis, job_ids: set[str]) -> None:
    """Leave nothing of the test's RQ jobs in the shared Redis (queues named crm, helpdesk)."""
    keys = [f"rq:{kind}:{job_id}" for job_id in job_ids for kind in ("job", "results")]
    registries = ("finished", "started", "failed", "scheduled", "deferred", "canceled")
    keys += [f"rq:{kind}:{queue}" for kind in registries for queue in ("crm", "helpdesk")]
    keys += ["rq:queue:crm", "rq:queue:helpdesk"]  # jobs left behind by a failure
    connection.delete(*keys)
    connection.srem("rq:queues", "rq:queue:crm", "rq:queue:helpdesk")
    connection.close()


def test_the_apps_settings_default_to_a_local_redis_and_read_the_environment() -> None:
    from deploy.app.settings import Settings

    local = Settings.from_env({})
    assert local.limiter_redis_url == "redis://127.0.0.1:6379/1"
    assert (local.limiter_prefix, local.dramatiq_namespace) == ("qrl", "dramatiq")
    stack = _services()["celery-worker"]["environment"]
    read = Settings.from_env({k: str(v) for k, v in stack.items()})
    assert read.upstream_url == "http://upstream:8080"
    assert read.celery_broker_url.startswith("amqp://")

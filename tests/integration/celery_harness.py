"""Real Celery workers for the tests: subprocesses on a real broker, a client app, cleanup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from queue_ratelimit import Limiter
from queue_ratelimit.backends import open_backend
from queue_ratelimit.integrations.celery import configure, install
from queue_ratelimit.testing import HiddenLimitUpstream

# one prefix per test session: limiter keys, broker keys and the integrations' names
os.environ.setdefault("QRL_PREFIX", f"qrltest-{uuid.uuid4().hex[:8]}")
from tests.integration import celery_app as capp
from tests.support import delete_keys, stop_workers

ROOT = Path(__file__).resolve().parents[2]
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


class CeleryRig:
    """One test's brokers, workers, upstream and limiter, torn down afterwards."""

    def __init__(
        self,
        broker: str,
        redis_url: str,
        upstream: HiddenLimitUpstream,
        visibility_timeout: float = 3600,
        broker_url: str | None = None,
        limiter_url: str | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.limiter_url = limiter_url or redis_url  # the limiter's state (results: redis_url)
        self.upstream = upstream
        self.kind = broker
        self.settings: dict[str, Any] = {}
        if broker == "redis":
            self.broker_url = broker_url or redis_url
            self.settings["broker_transport_options"] = {
                "global_keyprefix": f"{capp.PREFIX}-broker:",
                "visibility_timeout": visibility_timeout,
            }
        else:
            self.broker_url = RABBITMQ_URL
        self.limiter = Limiter(open_backend(self.limiter_url, prefix=capp.PREFIX), capp.CONFIGS)
        self.client = self._client_app()
        self.workers: list[tuple[str, subprocess.Popen[bytes], Any]] = []

    def _client_app(self) -> Celery:
        """The publisher: an app with ``install``, as a user's web process has (it sends
        tasks by name to their integrations' queues: on a Redis broker, tracked)."""
        client = Celery("qrl_client", broker=self.broker_url, backend=self.redis_url)
        client.conf.update(broker_connection_retry_on_startup=True, **self.settings)
        configure(client, self.limiter)
        install(client)
        return client

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "QRL_BROKER": self.broker_url,
            "QRL_BACKEND": self.redis_url,
            "QRL_REDIS": self.limiter_url,
            "QRL_UPSTREAM": self.upstream.url,
            "QRL_WORKER": "1",  # the app connects its recording receivers only in workers
            "QRL_SETTINGS": json.dumps(self.settings),
            **extra,
        }

    def start_worker(
        self, name: str, queues: list[str], concurrency: int = 4, pool: str = "threads", **env: str
    ) -> str:
        """Start ``celery worker`` in a subprocess and wait until it answers a ping."""
        node = f"{name}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open for the worker's lifetime
            prefix=f"qrl-{name}-", suffix=".log", delete=False
        )
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.celery_app",
            "worker",
            "-Q",
            ",".join(queues),
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-n",
            node,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ]
        proc = subprocess.Popen(
            command, cwd=ROOT, env=self.env(**env), stdout=log, stderr=subprocess.STDOUT
        )
        self.workers.append((node, proc, log))
        deadline = time.monotonic() + 60
        while not self.client.control.ping(destination=[node], timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {node} did not start:\n{self.log_of(node)}")
        return node

    def log_of(self, node: str, whole: bool = False) -> str:
        for name, _, log in self.workers:
            if name == node:
                text = Path(log.name).read_text(errors="replace")
                return text if whole else text[-5000:]
        return ""

    def kill(self, node: str, sig: int = signal.SIGKILL) -> None:
        for name, proc, _ in self.workers:
            if name == node and proc.poll() is None:
                proc.send_signal(sig)
                proc.wait(timeout=30)

    def active_queues(self, node: str) -> set[str]:
        replies = self.client.control.inspect(destination=[node], timeout=2).active_queues()
        return {q["name"] for q in (replies or {}).get(node, [])}

    def waiting(self, queue: str) -> int:
        """Messages of ``queue`` still in the broker (not delivered to any worker)."""
        if self.kind == "redis":
            key = self.settings["broker_transport_options"]["global_keyprefix"] + queue
            return int(redis.Redis.from_url(self.broker_url).llen(key))
        with self.client.connection_for_write() as conn:
            return int(conn.default_channel.queue_declare(queue, passive=True).message_count)

    def idle(self, nodes: list[str], queues: list[str]) -> bool:
        """No worker runs, holds or schedules a task and no message waits in ``queues``:
        nothing left that could still run (a duplicate included)."""
        inspect = self.client.control.inspect(destination=nodes, timeout=1)
        for view in (inspect.active, inspect.reserved, inspect.scheduled):
            replies = view() or {}
            if len(replies) < len(nodes) or any(replies.values()):
                return False
        if self.kind == "redis":
            client = redis.Redis.from_url(self.broker_url)
            prefix = self.settings["broker_transport_options"]["global_keyprefix"]
            if client.hlen(prefix + "unacked") or any(client.llen(prefix + q) for q in queues):
                return False
        return all(self.waiting(q) == 0 for q in queues) if self.kind != "redis" else True

    def held(self) -> dict[bytes, float]:
        """Redis broker: the deliveries held unacked, with the time each was taken."""
        key = self.settings["broker_transport_options"]["global_keyprefix"] + "unacked_index"
        held = redis.Redis.from_url(self.broker_url).zrange(key, 0, -1, withscores=True)
        return {tag: float(score) for tag, score in held}

    def held_longer_than(self, seconds: float) -> bool:
        """Messages are held unacked, every one of them for longer than ``seconds`` (past a
        visibility timeout, a starting worker takes them back)."""
        held = self.held()
        return bool(held) and max(held.values()) < time.time() - seconds

    def send(self, task: str, args: list[Any], queue: str) -> str:
        return str(self.client.send_task(task, args=args, queue=queue).id)

    def results(self, ids: list[str]) -> list[Any]:
        return [self.client.AsyncResult(i) for i in ids]

    def close(self) -> None:
        stop_workers(((proc, log) for _, proc, log in self.workers), timeout=20)
        self._purge()
        self.client.close()

    def _purge(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        delete_keys(client, f"{capp.PREFIX}-broker:*", f"{{{capp.PREFIX}:*", f"{capp.PREFIX}:*")
        if self.limiter_url != self.redis_url:
            for name in capp.CONFIGS:
                self.limiter.backend.purge(name)  # type: ignore[attr-defined]
            close = getattr(self.limiter.backend, "close", None)  # (a SQL store's)
            if close is not None:
                close()
        if self.kind == "rabbitmq":
            with self.client.connection_for_write() as conn:
                channel = conn.default_channel
                for queue in capp.CONFIGS:
                    channel.queue_delete(queue)


@contextmanager
def celery_rig(
    broker: str,
    redis_url: str,
    visibility_timeout: float = 3600,
    broker_url: str | None = None,
    limiter_url: str | None = None,
    **upstream: Any,
) -> Iterator[CeleryRig]:
    """A rig; ``broker_url`` puts the Redis broker on a server of its own, ``limiter_url``
    the limiter's state (any URL form: a cluster, a sentinel)."""
    with HiddenLimitUpstream(**upstream) as server:
        rig = CeleryRig(broker, redis_url, server, visibility_timeout, broker_url, limiter_url)
        try:
            yield rig
        finally:
            rig.close()


def wait_all(results: list[Any], timeout: float) -> list[Any]:
    """Each result's value, waiting with a deadline; failures come back as exceptions."""
    deadline = time.monotonic() + timeout
    values = []
    for result in results:
        left = max(0.1, deadline - time.monotonic())
        values.append(result.get(timeout=left, propagate=False))
    return values

"""Helpers shared by tests, importable by spawned worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

import redis

from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.limiter import Limiter

SVC = IntegrationConfig(
    name="svc",
    rate_limit_per_sec=10.0,
    burst_size=1.0,
    increase_factor=1.0,
    decrease_factor=0.5,
    min_rate=1.0,
    max_rate=20.0,
    cooldown_multiplier=2.0,
    max_backoff=60.0,
    max_wait=0.0,
)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, every: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


class RedisProcess:
    """A ``redis-server`` of our own on a fixed free port, which a test may stop and start
    again (an outage; a restart that loses every key unless ``durable``)."""

    def __init__(self, binary: str, port: int | None = None, durable: bool = False) -> None:
        self.binary = binary
        self.durable = durable  # an append-only file, synced per write: a restart keeps keys
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="qrl-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisProcess:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        aof = ["yes", "--appendfsync", "always"] if self.durable else ["no"]
        command += ["--save", "", "--appendonly", *aof, "--dir", self._dir]
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not reachable(self.url):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._proc.kill()
                raise RuntimeError(f"could not start {self.binary} on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()  # no shutdown courtesy: an outage
            self._proc.wait(timeout=10)
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def redis_limiter(url: str, prefix: str, config: IntegrationConfig, now: float | None) -> Limiter:
    backend = RedisBackend(url, prefix=prefix, clock=(lambda: now) if now is not None else None)
    return Limiter(backend, {config.name: config})


def backoff_after_barrier(
    url: str,
    prefix: str,
    config: IntegrationConfig,
    barrier: Any,
    use_epoch: bool,
    results: Any,
) -> None:
    """Worker process: acquire, wait for the others, then report one backoff."""
    limiter = redis_limiter(url, prefix, config, None)
    decision = limiter.acquire(config.name, max_wait=60.0)
    barrier.wait(timeout=30)
    epoch = decision.epoch if use_epoch else None
    result = limiter.on_backoff(config.name, retry_after=30.0, epoch=epoch)
    results.put(result.decreased)


def hold_lease_forever(
    url: str, prefix: str, config: IntegrationConfig, now: float | None, ready: Any
) -> None:
    """Worker process: take a concurrency lease, say so, then hang until killed."""
    limiter = redis_limiter(url, prefix, config, now)
    decision = limiter.acquire(config.name, max_wait=60.0)
    ready.put(decision.lease)
    time.sleep(3600)


def stop_workers(
    workers: Iterable[tuple[subprocess.Popen[bytes], IO[bytes]]], timeout: float
) -> None:
    """Stop worker subprocesses warmly (SIGTERM to all, then wait; kill after ``timeout``)
    and delete the log file each wrote to."""
    workers = list(workers)
    for proc, _log in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, log in workers:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)


def delete_keys(client: redis.Redis, *patterns: str) -> None:
    """Delete the keys matching ``patterns`` (SCAN, never FLUSHDB)."""
    for pattern in patterns:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


def hold(client: redis.Redis, prefix: str, task_id: str, timeout: float = 60.0) -> None:
    """In a task: record that it holds (with this process's id), then wait until the test
    releases every held task (``{prefix}:released``): a kill then surely lands mid-task. A
    test that never releases them fails the task after ``timeout`` seconds."""
    client.rpush(f"{prefix}:holding", f"{task_id} {os.getpid()}")
    deadline = time.monotonic() + timeout
    while not client.exists(f"{prefix}:released"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} was held {timeout}s and never released")
        time.sleep(0.02)

"""Helpers shared by tests, importable by spawned worker processes."""

from __future__ import annotations

import inspect
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import anyio.from_thread
import redis
from redis.cluster import RedisCluster

from queue_ratelimit import signals as qrl_signals
from queue_ratelimit.async_limiter import AsyncLimiter
from queue_ratelimit.backends.postgres import PostgresBackend
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.backends.sqlite import SQLiteBackend
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import BackendUnavailable
from queue_ratelimit.limiter import Limiter

SVC = IntegrationConfig(
    name="svc",
    rate_limit_per_sec=10.0,
    burst_size=1.0,
    increase_factor=1.0,
    decrease_factor=0.5,
    slow_start=False,  # plain AIMD; the start phase's tests turn it on
    min_rate=1.0,
    max_rate=20.0,
    cooldown_multiplier=2.0,
    max_backoff=60.0,
    max_wait=0.0,
)


class Blocking:
    """An ``AsyncLimiter`` called as a ``Limiter`` is: each of its coroutines run to its end
    on the portal's event loop (a thread of its own); what it lacks, its ``sync`` has. The
    tests written for ``Limiter`` drive the async limiter through it."""

    def __init__(self, limiter: AsyncLimiter, portal: anyio.from_thread.BlockingPortal) -> None:
        self.limiter = limiter
        self._portal = portal

    def __getattr__(self, name: str) -> Any:
        made = getattr(self.limiter, name, None)
        if made is None:
            return getattr(self.limiter.sync, name)
        if inspect.iscoroutinefunction(made):
            return lambda *args, **kwargs: self._portal.call(lambda: made(*args, **kwargs))
        return made


class BlockingCounted(RedisBackend):
    """A Redis backend counting the script calls of its blocking client: an event loop's
    limiter (``AsyncLimiter``) must make none; it awaits ``redis.asyncio`` instead."""

    blocking = 0

    def _run(self, op: str, integration: str, args: Sequence[Any]) -> Any:
        self.blocking += 1
        return super()._run(op, integration, args)


def most_in_one_second(times: list[float]) -> int:
    """The most of ``times`` (seconds) that fall within any one second: what a limit of
    rate + burst per second must never exceed."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def purge_store(limiter: Limiter, names: Iterable[str]) -> None:
    """Delete the integrations' rows from a limiter's store other than the harness's Redis
    (a SQL store), then close its connections."""
    for name in names:
        limiter.backend.purge(name)  # type: ignore[attr-defined]
    close = getattr(limiter.backend, "close", None)
    if close is not None:
        close()


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
    """A ``redis-server`` of our own: a free port, a directory and a log file in it. A test
    may stop and start it again (an outage; a restart loses every key unless ``durable``);
    the Cluster and Sentinel deployments (``tests/deployments.py``) start theirs with more
    options."""

    def __init__(
        self, binary: str, port: int | None = None, durable: bool = False, role: str = "redis"
    ) -> None:
        self.binary = binary
        self.durable = durable  # an append-only file, synced per write: a restart keeps keys
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix=f"qrl-{role}-"))
        self.log = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        """The command-line options every server of ours has."""
        aof = ["yes", "--appendfsync", "always"] if self.durable else ["no"]
        return [
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)),
            *("--logfile", str(self.log), "--save", "", "--appendonly", *aof),
        ]

    def start(self, args: Sequence[str] | None = None, timeout: float = 10.0) -> RedisProcess:
        """Start it with ``args`` (default: ``args()``) and wait until it answers."""
        command = [self.binary, *(self.args() if args is None else args)]
        self._proc = subprocess.Popen(command, cwd=self.dir, stdout=subprocess.DEVNULL)
        try:
            wait_until(self._answers, timeout, every=0.02)
        except (AssertionError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(
                f"could not start {self.binary} on port {self.port}: {exc}\n{self.tail()}"
            ) from exc
        return self

    def _answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"exited with status {self._proc.returncode}")
        return reachable(self.url)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def stop(self) -> None:
        """SIGKILL: no shutdown courtesy, no final save (an outage)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tail(self, lines: int = 15) -> str:
        """The end of its log, for a failure message."""
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no log at {self.log})"
        return "\n".join([f"--- last lines of {self.log}", *text])


def shared_limiter(
    url: str,
    prefix: str,
    config: IntegrationConfig,
    now: float | None,
    claim_ahead: float = 0.0,
) -> Limiter:
    """A limiter on the shared state at ``url`` (Redis, PostgreSQL or a ``sqlite:///`` file), as
    another process has it; at a fixed time ``now`` when given; a SQL store's
    ``claim_ahead``."""
    clock = (lambda: now) if now is not None else None
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        backend: Any = SQLiteBackend(
            path, prefix=prefix, clock=clock or time.time, claim_ahead=claim_ahead
        )
    elif url.startswith(("postgresql://", "postgres://", "host=", "dbname=")):
        backend = PostgresBackend(url, prefix=prefix, clock=clock, claim_ahead=claim_ahead)
    else:
        backend = RedisBackend(url, prefix=prefix, clock=clock)
    return Limiter(backend, {config.name: config})


def _grab(
    url: str, prefix: str, config: IntegrationConfig, tries: int, results: Any, ahead: float
) -> None:
    """Worker process: ``tries`` acquires that reserve nothing; put how many were granted."""
    limiter = shared_limiter(url, prefix, config, None, ahead)
    results.put(sum(limiter.acquire(config.name, reserve=False).granted for _ in range(tries)))
    getattr(limiter.backend, "close", lambda: None)()


def grants_across_processes(
    url: str,
    prefix: str,
    config: IntegrationConfig,
    processes: int = 4,
    tries: int = 20,
    claim_ahead: float = 0.0,
) -> int:
    """The grants ``processes`` spawned processes sharing the state at ``url`` got between
    them, each asking ``tries`` times (a SQL store with ``claim_ahead``)."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_grab, args=(url, prefix, config, tries, results, claim_ahead))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    granted = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    return sum(granted)


def backoff_after_barrier(
    url: str,
    prefix: str,
    config: IntegrationConfig,
    barrier: Any,
    use_epoch: bool,
    results: Any,
) -> None:
    """Worker process: acquire, wait for the others, then report one backoff."""
    limiter = shared_limiter(url, prefix, config, None)
    decision = limiter.acquire(config.name, max_wait=60.0)
    barrier.wait(timeout=30)
    epoch = decision.epoch if use_epoch else None
    result = limiter.on_backoff(config.name, retry_after=30.0, epoch=epoch)
    results.put(result.decreased)


def hold_lease_forever(
    url: str, prefix: str, config: IntegrationConfig, now: float | None, ready: Any
) -> None:
    """Worker process: take a concurrency lease, say so, then hang until killed."""
    limiter = shared_limiter(url, prefix, config, now)
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


def record_events(records: Callable[[], redis.Redis], prefix: str) -> None:
    """Connect what a test app's worker records in the tests' Redis (``records()``): each
    wait granted to a task, ``{prefix}:granted`` (its name, id and the seconds; and its slot's
    time in ``{prefix}:slots:<integration>``), and each
    requeue, ``{prefix}:requeues`` (its id and the reason). ``tests/integration/rigs.py``
    reads them."""

    def granted(sender: object, **fields: Any) -> None:
        if fields.get("task_id"):
            line = f"{fields['task_name']} {fields['task_id']} {float(fields['wait'])!r}"
            records().rpush(f"{prefix}:granted", line)
            records().rpush(f"{prefix}:slots:{fields['integration']}", repr(fields["slot"]))

    def requeued(sender: object, **fields: Any) -> None:
        records().rpush(f"{prefix}:requeues", f"{fields.get('task_id')} {fields['reason']}")

    qrl_signals.acquired.connect(granted, weak=False)
    qrl_signals.task_requeued.connect(requeued, weak=False)


def new_prefix() -> str:
    """A key prefix of one test's own."""
    return f"qrltest-{uuid.uuid4().hex[:12]}"


def delete_keys(client: redis.Redis | RedisCluster, *patterns: str) -> None:
    """Delete the keys matching ``patterns`` (SCAN, never FLUSHDB; on every master of a
    cluster, whose client splits the DEL per slot)."""
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


def refused_at_start(command: Sequence[str], app_dir: Path, named: str, **env: str) -> None:
    """Run a worker ``command`` from ``app_dir`` (on ``PYTHONPATH`` with the checkout): it
    must exit non-zero with one line naming the misspelled ``notoin``, the job or task
    ``named`` and a suggestion, and no traceback."""
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([str(app_dir), str(root)])
    done = subprocess.run(
        list(command),
        cwd=app_dir,
        env={**os.environ, "PYTHONPATH": path, **env},
        capture_output=True,
        text=True,
        timeout=90,
    )
    lines = (done.stdout + done.stderr).splitlines()
    mentions = [line for line in lines if "notoin" in line]
    assert done.returncode != 0
    assert len(mentions) == 1, lines
    assert named in mentions[0] and "did you mean 'notion'?" in mentions[0]
    assert not any("Traceback" in line for line in lines), lines


def answers(limiter: Limiter) -> bool:
    """Whether the limiter decides at all (shared or local), not whether it grants."""
    try:
        limiter.acquire("svc")
    except BackendUnavailable:
        return False
    return True


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real local HTTP server answering with ``handler`` on a free port of 127.0.0.1, in a
    thread, for the ``with`` block: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send_json(handler: BaseHTTPRequestHandler, status: int, body: object, **headers: str) -> None:
    """Answer ``status`` with ``body`` as JSON and ``headers``."""
    payload = json.dumps(body).encode()
    handler.send_response(status)
    for name, value in {**headers, "Content-Type": "application/json"}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)

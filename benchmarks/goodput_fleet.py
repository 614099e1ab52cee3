"""The goodput benchmark's systems, and their worker fleets: start, send tasks, stop, purge.

A ``System`` is one row of the tables (a framework and how it limits); a ``Fleet`` runs its
worker processes (real ``celery``, ``dramatiq`` and ``rq`` CLIs in subprocesses, on Redis)
for every scenario, then stops them and deletes every key it made. Each system gets its own
run prefix (``<run>-<code>``): its broker keys, queues, limiter state and records.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import goodput_common as common
import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class System:
    """One row: a framework, the kind of task it runs (``ours`` for this project)."""

    code: str
    label: str
    framework: str
    kind: str

    @property
    def ours(self) -> bool:
        return self.kind == "ours"

    @property
    def note(self) -> str:
        """How the system is configured, for the printed legend."""
        return NOTES[self.code]


SYSTEMS = (
    System("a", "ours/celery", "celery", "ours"),
    System("b", "celery rate_limit", "celery", "rl"),
    System("c", "celery+tenacity", "celery", "tenacity"),
    System("d", "dramatiq bucket", "dramatiq", "bucket"),
    System("e1", "rq+tenacity", "rq", "tenacity"),
    System("e2", "rq RateLimit", "rq", "rqlimit"),
    System("f1", "ours/dramatiq", "dramatiq", "ours"),
    System("f2", "ours/rq", "rq", "ours"),
)
NOTES = {
    "a": "RateLimitedTask + RateLimitedAdapter; one node, prefork -c N, acks_late, prefetch 1",
    "b": "rate_limit = L per task type (per node: fleet-wide here, one node), "
    "autoretry_for=(HTTPError,), retry_backoff, retry_jitter, max_retries 20; "
    "same app settings as a",
    "c": "no limiter; tenacity sleeps Retry-After + U(0, 0.2) s in the task on each 429; "
    "same app settings as a",
    "d": "BucketRateLimiter(limit=L, bucket=1 s) per queue and tenant; Retries: "
    "min_backoff 1 s, max_backoff 10 s, max_retries 30; processes N x 1 thread",
    "e1": "SimpleWorker x N; tenacity sleeps Retry-After + U(0, 0.2) s in the job on each 429",
    "e2": "rq 3.0 RateLimit(key per queue and tenant, concurrency=N/2): caps jobs queued or "
    "running, not calls/s; plus tenacity on 429; SimpleWorker x N",
    "f1": "RateLimitMiddleware + RateLimitedAdapter; processes N x 1 thread",
    "f2": "RateLimitedSimpleWorker x N, --with-scheduler; RateLimitedAdapter",
}


class Fleet(ABC):
    """The worker processes of one system, and how the driver talks to them."""

    def __init__(self, system: System, redis_url: str, run: str, workers: int, rate: float):
        self.system = system
        self.redis_url = redis_url
        self.run = f"{run}-{system.code}"
        self.workers = workers
        self.rate = rate
        self.queues = (f"gp-{self.run}-api", f"gp-{self.run}-other")
        self.redis = redis.Redis.from_url(redis_url)
        self.records = common.Records(self.redis, self.run)
        self.procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self.shared = False  # this project: max_sleepers 1 (workers shared; see ours_config)
        self.fair = False  # this project: the app-wide limit known, shared fairly (ours_config)
        self.idle_ttl = 3600.0  # this project: how long a key idles before it is forgotten

    def env(self, **extra: str) -> dict[str, str]:
        path = os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])
        return {
            **os.environ,
            "PYTHONPATH": path,
            common.REDIS_ENV: self.redis_url,
            common.RUN_ENV: self.run,
            common.QUEUES_ENV: ",".join(self.queues),
            common.RATE_ENV: repr(self.rate),
            common.SHARED_ENV: "1" if self.shared else "0",
            common.FAIR_ENV: "1" if self.fair else "0",
            common.IDLE_TTL_ENV: repr(self.idle_ttl),
            "QUEUE_RATELIMIT_IDLE_TTL": repr(self.idle_ttl),
            "GP_WORKER": "1",
            **extra,
        }

    def spawn(self, command: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open for the worker's lifetime
            prefix=f"goodput-{self.system.code}-", suffix=".log", delete=False
        )
        proc = subprocess.Popen(  # its own process group: stop() ends its children too
            command,
            cwd=HERE,
            env=self.env(**extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((proc, log))
        return proc

    def logs(self) -> str:
        tails = (Path(log.name).read_text(errors="replace")[-3000:] for _, log in self.procs)
        return "\n".join(tails)

    def wait_until(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            dead = [p for p, _ in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{self.system.label}: {what} failed:\n{self.logs()}")
            time.sleep(0.1)

    @abstractmethod
    def start(self) -> None:
        """Start the workers and return once every one is ready."""

    @abstractmethod
    def send(self, queue: str, base: str, tenant: str, limit: float) -> str:
        """Enqueue one task on ``queue`` (one of ``self.queues``); its id."""

    def set_limits(self, limits: dict[str, float]) -> None:  # noqa: B027 - optional hook
        """Configure a per-queue limit where the system is configured that way (L known)."""

    def failed_ids(self, ids: list[str]) -> set[str]:
        """The tasks among ``ids`` that failed visibly."""
        return {i for i, f in zip(ids, self.records.fetch("failed", ids), strict=True) if f}

    def alive(self) -> bool:
        return all(proc.poll() is None for proc, _ in self.procs)

    def stop(self, *, keep_limiter: bool = False) -> None:
        """Stop the workers (TERM, then KILL after 1.5 s: every task is done or abandoned by
        then) and delete every key of this system (but the limiter's, with
        ``keep_limiter``: a fleet stopped for a while and started again)."""
        for proc, _ in self.procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 1.5
        for proc, log in self.procs:
            try:
                proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            log.close()
            os.unlink(log.name)
        self.procs.clear()
        if not keep_limiter:
            self.purge()

    def restart(self) -> None:
        """Stop, delete every key, start again: nothing left from a phase that timed out."""
        self.stop()
        self.start()

    def purge(self) -> None:
        """Delete the keys under this system's prefix (limiter, records, broker)."""
        for pattern in (f"{self.run}:*", f"{{{self.run}:*", f"{self.run}-*"):
            delete_matching(self.redis, pattern)

    def reset_limiter(self) -> None:
        """Forget this project's learned state between scenarios (a fresh start each)."""
        delete_matching(self.redis, f"{{{self.run}:*")


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the worker's process group (the worker and the children it forked)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)


def delete_matching(client: redis.Redis, pattern: str) -> None:
    keys = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


class CeleryFleet(Fleet):
    """One ``celery worker`` node, prefork with N processes, consuming both queues."""

    TASKS: ClassVar[dict[str, str]] = {"ours": "gp.ours", "rl": "gp.rl", "tenacity": "gp.tenacity"}

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        from celery import Celery

        self.transport = {"global_keyprefix": f"{self.run}-broker:", "visibility_timeout": 3600}
        self.client = Celery("goodput-client", broker=self.redis_url)
        self.client.conf.update(
            broker_transport_options=self.transport, broker_connection_retry_on_startup=True
        )
        self.node = f"gp-{self.run}@{socket.gethostname()}"

    def start(self) -> None:
        command = [sys.executable, "-m", "celery", "-A", "goodput_celery", "worker"]
        command += ["-P", "prefork", "-c", str(self.workers), "-Q", ",".join(self.queues)]
        command += ["-n", self.node, "--without-gossip", "--without-mingle"]
        command += ["--without-heartbeat", "-l", "WARNING"]
        self.spawn(command, GP_TRANSPORT=json.dumps(self.transport))
        ping = self.client.control.ping
        self.wait_until(lambda: ping(destination=[self.node], timeout=0.5), "celery start")

    def task_name(self, queue: str) -> str:
        name = self.TASKS[self.system.kind]
        if self.system.kind == "tenacity":
            return name
        return f"{name}.{'api' if queue == self.queues[0] else 'other'}"

    def send(self, queue: str, base: str, tenant: str, limit: float) -> str:
        result = self.client.send_task(
            self.task_name(queue), args=[base, tenant, limit], queue=queue
        )
        return str(result.id)

    def set_limits(self, limits: dict[str, float]) -> None:
        if self.system.kind != "rl":
            return
        for queue, limit in limits.items():
            replies = self.client.control.rate_limit(
                self.task_name(queue), f"{limit:g}/s", destination=[self.node], reply=True
            )
            if not replies:
                raise RuntimeError(f"celery rate_limit for {queue}: no reply")


class DramatiqFleet(Fleet):
    """``dramatiq`` with N processes of one thread each, consuming both queues."""

    READY = "Worker process is ready for action."

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        from dramatiq.brokers.redis import RedisBroker

        self.client = RedisBroker(  # type: ignore[no-untyped-call]
            url=self.redis_url, namespace=f"{self.run}-dramatiq", middleware=[]
        )

    def start(self) -> None:
        command = [sys.executable, "-m", "dramatiq", "goodput_dramatiq"]
        command += ["--processes", str(self.workers), "--threads", "1"]
        command += ["--worker-shutdown-timeout", "5000", "--queues", *self.queues]
        self.spawn(command)
        self.wait_until(lambda: self.logs().count(self.READY) >= self.workers, "dramatiq start")

    def send(self, queue: str, base: str, tenant: str, limit: float) -> str:
        from dramatiq import Message

        actor = "gp_ours_" if self.system.kind == "ours" else "gp_bucket_"
        message: Message[Any] = Message(
            queue_name=queue,
            actor_name=actor + queue,
            args=(base, tenant, limit),
            kwargs={},
            options={},
        )
        return str(self.client.enqueue(message).message_id)


class RQFleet(Fleet):
    """N ``rq worker`` processes (``SimpleWorker``, or this project's), both queues each."""

    WORKER_CLASS: ClassVar[dict[str, str]] = {
        "ours": "queue_ratelimit.integrations.rq.RateLimitedSimpleWorker",
        "tenacity": "rq.worker.SimpleWorker",
        "rqlimit": "rq.worker.SimpleWorker",
    }
    LAUNCH = "import goodput_rq; from rq.cli import main; main()"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        from rq import Queue

        self.names: list[str] = []
        self.used: list[str] = []  # every worker name started (purged at the end)
        self.rq_queues = {name: Queue(name, connection=self.redis) for name in self.queues}
        self.sent: list[str] = []
        self.config_path = ""

    def write_config(self) -> str:
        """This project's integration settings, as the override file the workers read."""
        config = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept for the workers' lifetime
            "w", prefix="goodput-rq-", suffix=".json", delete=False
        )
        with config:
            configs = {
                q: common.ours_config(q, self.rate, self.shared, self.fair).to_dict()
                for q in self.queues
            }
            json.dump(configs, config)
        return config.name

    def start(self) -> None:
        self.config_path = self.write_config()
        rq_env = {
            "QUEUE_RATELIMIT_REDIS_URL": self.redis_url,
            "QUEUE_RATELIMIT_PREFIX": self.run,
            "QUEUE_RATELIMIT_CONFIG": self.config_path,
        }
        # new names each start: a killed worker's registration outlives it for a while
        self.names = [f"gp-{self.run}-w{i}-{uuid.uuid4().hex[:4]}" for i in range(self.workers)]
        self.used += self.names
        for name in self.names:
            command = [sys.executable, "-c", self.LAUNCH, "worker", "--url", self.redis_url]
            command += ["-w", self.WORKER_CLASS[self.system.kind], "--name", name]
            command += ["--with-scheduler", "--logging_level", "WARNING"]
            command += ["--exception-handler", "goodput_rq.record_failure", *self.queues]
            self.spawn(command, **rq_env)
        ready = lambda: all(self.redis.exists(f"rq:worker:{n}") for n in self.names)  # noqa: E731
        self.wait_until(ready, "rq start")

    def send(self, queue: str, base: str, tenant: str, limit: float) -> str:
        from rq import RateLimit

        kind = self.system.kind
        func = f"goodput_rq.ours_{'api' if queue == self.queues[0] else 'other'}"
        options: dict[str, Any] = {"result_ttl": 600, "failure_ttl": 600}
        if kind != "ours":
            func = "goodput_rq.tenacity_job"
        if kind == "rqlimit":
            key = f"{queue}:{tenant or common.NO_TENANT}"
            options["rate_limit"] = RateLimit(key, concurrency=max(1, self.workers // 2))
        job = self.rq_queues[queue].enqueue(func, base, tenant, limit, **options)
        self.sent.append(job.id)
        return str(job.id)

    def failed_ids(self, ids: list[str]) -> set[str]:
        from rq.job import Job

        failed = super().failed_ids(ids)
        for job in Job.fetch_many(ids, connection=self.redis):
            if job is not None and job.get_status(refresh=False).value == "failed":
                failed.add(job.id)
        return failed

    def stop(self, *, keep_limiter: bool = False) -> None:
        super().stop(keep_limiter=keep_limiter)
        if self.config_path:
            os.unlink(self.config_path)
            self.config_path = ""

    def purge(self) -> None:
        super().purge()
        ours, sent = (*self.queues, *self.used), set(self.sent)
        doomed = []
        for raw in self.redis.scan_iter(match="rq:*", count=1000):
            key = raw.decode()
            if any(part in key for part in ours) or sent.intersection(key.split(":")):
                doomed.append(key)
        for start in range(0, len(doomed), 500):
            self.redis.delete(*doomed[start : start + 500])
        for queue in self.queues:
            self.redis.srem("rq:queues", f"rq:queue:{queue}")
        limits: set[bytes] = self.redis.smembers("rq:rl-keys")  # type: ignore[assignment]
        mine = [k for k in limits if k.decode().startswith(f"gp-{self.run}-")]
        if mine:
            self.redis.srem("rq:rl-keys", *mine)


FLEETS: dict[str, type[Fleet]] = {
    "celery": CeleryFleet,
    "dramatiq": DramatiqFleet,
    "rq": RQFleet,
}


def fleet_for(system: System, redis_url: str, run: str, workers: int, rate: float) -> Fleet:
    return FLEETS[system.framework](system, redis_url, run, workers, rate)

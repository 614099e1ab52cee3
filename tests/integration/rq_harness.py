"""Real RQ workers for the tests: ``rq worker`` subprocesses on a real Redis, and cleanup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.job import Job

from queue_ratelimit import Limiter
from queue_ratelimit.integrations.rq import limiter_for
from queue_ratelimit.integrations.rq_settings import PAUSED_FIELD
from queue_ratelimit.testing import HiddenLimitUpstream

# one prefix per test session: limiter keys, records and the integrations' (queues') names
os.environ.setdefault("QRL_PREFIX", f"qrltest-{uuid.uuid4().hex[:8]}")
from tests.integration import rq_jobs as jobs
from tests.support import purge_store, stop_workers

ROOT = Path(__file__).resolve().parents[2]
# ``rq worker``, with the job module imported first: work horses inherit it instead of
# importing it for every job (RQ's own advice for forking workers)
RQ_WORKER = "import tests.integration.rq_jobs; from rq.cli import main; main()"
WORKERS = {
    "fork": "queue_ratelimit.integrations.rq.RateLimitedWorker",
    "simple": "queue_ratelimit.integrations.rq.RateLimitedSimpleWorker",
}


class RQRig:
    """One test's workers, upstream and limiter, torn down afterwards (only our keys)."""

    def __init__(
        self,
        kind: str,
        redis_url: str,
        upstream: HiddenLimitUpstream,
        limiter_url: str | None = None,
    ) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.limiter_url = limiter_url or redis_url  # the limiter's state (RQ's: redis_url)
        self.upstream = upstream
        self.connection = redis.Redis.from_url(redis_url)
        config = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept for the workers' lifetime
            "w", prefix="qrl-rq-", suffix=".json", delete=False
        )
        with config:
            json.dump(jobs.CONFIGS, config)
        self.config_path = config.name
        self.limiter: Limiter = limiter_for(self.env())
        self.workers: list[tuple[str, subprocess.Popen[bytes], Any]] = []
        self.job_ids: set[str] = set()
        self.worker_options: list[str] = []  # more ``rq worker`` options for every worker

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "QRL_UPSTREAM": self.upstream.url,
            "QRL_WORKER": "1",  # the app connects its recording receivers only in workers
            "QUEUE_RATELIMIT_REDIS_URL": self.limiter_url,
            "QUEUE_RATELIMIT_PREFIX": jobs.PREFIX,
            "QUEUE_RATELIMIT_CONFIG": self.config_path,
            "QUEUE_RATELIMIT_POLL": "0.5",
            **extra,
        }

    def start_worker(self, queues: list[str], *, scheduler: bool = True, **env: str) -> str:
        """Start ``rq worker`` (with RQ's scheduler); wait until it has registered."""
        name = f"qrl-{self.kind}-{uuid.uuid4().hex[:8]}"
        proc = self.spawn(queues, name, scheduler=scheduler, **env)
        deadline = time.monotonic() + 30
        while not self.connection.exists(f"rq:worker:{name}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {name} did not start:\n{self.log_of(name)}")
            time.sleep(0.05)
        return name

    def spawn(
        self, queues: list[str], name: str, *, scheduler: bool = True, **env: str
    ) -> subprocess.Popen[bytes]:
        """Start ``rq worker`` in a subprocess, its output in a log file (see ``log_of``)."""
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open for the worker's lifetime
            prefix=f"qrl-{name}-", suffix=".log", delete=False
        )
        command = [
            sys.executable,
            "-c",
            RQ_WORKER,
            "worker",
            "-w",
            WORKERS[self.kind],
            *(["--with-scheduler"] if scheduler else []),
            "--url",
            self.redis_url,
            "--name",
            name,
            *self.worker_options,
            *queues,
        ]
        proc = subprocess.Popen(
            command, cwd=ROOT, env=self.env(**env), stdout=log, stderr=subprocess.STDOUT
        )
        self.workers.append((name, proc, log))
        return proc

    def log_of(self, name: str, whole: bool = False) -> str:
        for worker, _, log in self.workers:
            if worker == name:
                text = Path(log.name).read_text(errors="replace")
                return text if whole else text[-5000:]
        return ""

    def queue(self, name: str) -> Queue:
        return Queue(name, connection=self.connection)

    def enqueue(self, queue: str, func: Callable[..., Any], *args: Any, **options: Any) -> Job:
        job = self.queue(queue).enqueue(func, *args, **options)
        self.job_ids.add(job.id)
        return job

    def fetch(self, job_ids: list[str]) -> list[Job]:
        found = Job.fetch_many(job_ids, connection=self.connection)
        assert all(job is not None for job in found)
        return [job for job in found if job is not None]

    def statuses(self, job_ids: list[str]) -> list[str]:
        return [job.get_status(refresh=False).value for job in self.fetch(job_ids)]

    def all_done(self, job_ids: list[str]) -> bool:
        """Every job finished or failed (a deadline-free predicate for ``wait_until``)."""
        return all(s in ("finished", "failed") for s in self.statuses(job_ids))

    def paused(self, worker: str) -> set[str]:
        raw = self.connection.hget(f"rq:worker:{worker}", PAUSED_FIELD)
        return set(raw.decode().split(",")) - {""} if raw else set()

    def records(self, what: str) -> list[str]:
        return [r.decode() for r in self.connection.lrange(f"{jobs.PREFIX}:{what}", 0, -1)]

    def close(self) -> None:
        stop_workers(((proc, log) for _, proc, log in self.workers), timeout=20)
        os.unlink(self.config_path)
        self._purge()
        self.connection.close()

    def _purge(self) -> None:
        """Delete this test's keys: its queues, jobs and workers, and the limiter's keys."""
        ours = (
            jobs.NOTION,
            jobs.GITHUB,
            jobs.SHARED,
            jobs.ALONE,
            *self.job_ids,
            *(name for name, _, _ in self.workers),
        )
        doomed = [
            key
            for key in self.connection.scan_iter(match="rq:*", count=1000)
            if any(part in key.decode() for part in ours)
        ]
        for pattern in (f"{{{jobs.PREFIX}:*", f"{jobs.PREFIX}:*"):
            doomed += list(self.connection.scan_iter(match=pattern))
        if doomed:
            self.connection.delete(*doomed)
        for queue in (jobs.NOTION, jobs.GITHUB, jobs.SHARED, jobs.ALONE):
            self.connection.srem("rq:queues", f"rq:queue:{queue}")
        if self.limiter_url != self.redis_url:  # (the limiter's rows in another store)
            purge_store(self.limiter, jobs.CONFIGS)


@contextmanager
def rq_rig(
    kind: str, redis_url: str, limiter_url: str | None = None, **upstream: Any
) -> Iterator[RQRig]:
    """A rig; ``limiter_url`` puts the limiter's state elsewhere (any store's URL)."""
    with HiddenLimitUpstream(**upstream) as server:
        rig = RQRig(kind, redis_url, server, limiter_url)
        try:
            yield rig
        finally:
            rig.close()

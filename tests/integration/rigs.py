"""One vocabulary for the shared scenarios (test_scenarios.py) over Celery, Dramatiq and RQ.

A scenario is written once against ``Rig``. Each framework's rig is a thin adapter over its
harness (celery_harness, dramatiq_harness, rq_harness) that maps the scenarios' logical
tasks onto the framework's test app (celery_app, dramatiq_app, rq_jobs):

* ``notion``: one call to the notion integration; whatever framework retries it carries
  (RQ: ``Retry(max=2)``; Celery's and Dramatiq's declare none) a rate limit never spends.
* ``notion_no_retry``: the same call, an error fails it at once (the breaker's failures).
* ``github``: one call to the github integration (tenant "acme" where the task takes one),
  with two framework retries that a rate limit must never spend.
* ``throttled``: meets a backoff it reports itself on every run; a requeue budget of 3.
* ``held``: one call to notion, then holds until ``release()``: a kill surely lands
  mid-task. RQ runs a dead worker's job again only if it has a retry left (``Retry(max=1)``).

Task ids are the handles: the upstream counts its calls by them. Every app records, in the
tests' Redis under the session prefix, each wait granted (task name, id, seconds), each
requeue (id, reason), each held task (id, pid) and, where the task counts them, its runs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pika
import redis
from celery.result import AsyncResult
from dramatiq import Message
from dramatiq.results import ResultFailure, ResultMissing
from rq import Retry
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from rq.results import Result

from queue_ratelimit import Limiter
from queue_ratelimit.tasks import TICKET_HEADER
from queue_ratelimit.testing import HiddenLimitUpstream
from tests.integration.celery_harness import CeleryRig, capp, celery_rig, wait_all
from tests.integration.dramatiq_harness import DramatiqRig, dapp, dramatiq_rig
from tests.integration.rq_harness import RQRig, jobs, rq_rig
from tests.support import wait_until

OpenRig = Callable[..., AbstractContextManager["Rig"]]
"""Opens a test's rig: ``rig_of(kills=False, **upstream)`` (the ``rig_of`` fixture)."""


PREFIX = capp.PREFIX  # the session's prefix (QRL_PREFIX): the same in the three apps

KILL_VISIBILITY = 6.0
"""Celery's Redis broker, in a rig made for kills: a dead worker's deliveries go to a worker
starting this many seconds after they were taken (the visibility timeout)."""
KILL_HEARTBEAT_MS = "5000"
"""Dramatiq's Redis broker, in a rig made for kills: a worker silent this long is dead and its
unacknowledged messages go back to their queue."""


@dataclass(frozen=True)
class Failure:
    """A task that failed: its exception's name as the framework keeps it (with its module
    where the framework keeps that), and the message or traceback it keeps."""

    error: str
    message: str

    def is_a(self, exc_type: type[BaseException]) -> bool:
        qualified = f"{exc_type.__module__}.{exc_type.__qualname__}"
        return self.error in (exc_type.__name__, qualified)


def completed(values: list[Any]) -> bool:
    """Every task's value is its body's result (a dict), none a ``Failure``."""
    return all(isinstance(v, dict) for v in values)


@dataclass(frozen=True)
class Wait:
    """A wait granted to a task: the framework's task name, the task's id, the seconds."""

    task: str
    task_id: str
    seconds: float


class Rig(Protocol):
    """Workers of one framework on one broker, a hidden-limit upstream, and the limiter."""

    name: str  # e.g. "celery-redis", "rq-fork"
    notion: str  # the integrations, named like their queues
    github: str
    upstream: HiddenLimitUpstream
    limiter: Limiter  # the workers' limiter state, seen from the test

    def start_worker(self, queues: Sequence[str], concurrency: int = 4) -> str:
        """Start a worker (RQ's runs one job at a time) and wait until it is ready."""
        ...

    def task_name(self, task: str) -> str:
        """The framework's name for a logical task (the name its waits are recorded with)."""
        ...

    def max_wait(self, task: str) -> float:
        """The longest wait a logical task may sleep in the worker."""
        ...

    def send(self, task: str, queue: str, *args: Any) -> str:
        """Send a logical task; its id."""
        ...

    def wait_all(self, ids: Sequence[str], timeout: float) -> list[Any]:
        """Each task's value once every one has ended; a failure as a ``Failure``."""
        ...

    def failed(self) -> dict[str, str]:
        """Every task the framework itself holds as failed, where its operators look, with
        the exception's name."""
        ...

    def retries(self, ids: Sequence[str]) -> list[int | None]:
        """The framework retries each task spent (None: the framework cannot tell)."""
        ...

    def later(self, ids: Sequence[str]) -> dict[str, float | None]:
        """Those of ``ids`` not run and waiting to run later, each with the time it is due
        where the framework schedules it (None: the broker holds it)."""
        ...

    def runs(self, task_id: str) -> int | None:
        """How often a ``throttled`` task's body ran (None: the task does not count)."""
        ...

    def ticket_kept(self, task_id: str) -> bool | None:
        """Whether a failed task still carries its requeue ticket, which a requeue by hand
        would count on from (None: not looked at; only RQ's integration promises that a job
        requeued by hand starts with a full budget, docs/rq.md)."""
        ...

    def requeued(self, reason: str | None = None) -> list[str]:
        """The id of the task of each requeue (for ``reason`` only, when given), in order."""
        ...

    def waits(self) -> list[Wait]:
        """Every wait granted to a task."""
        ...

    def paused(self, worker: str) -> set[str]:
        """The queues the worker leaves alone while their breaker is open."""
        ...

    def waiting(self, queue: str) -> int:
        """Messages of ``queue`` waiting in the broker for a worker."""
        ...

    def holding(self) -> list[str]:
        """The ids of the ``held`` tasks that have begun to hold, in order."""
        ...

    def release(self) -> None:
        """Let every ``held`` task, running or to come, go on."""
        ...

    def log(self, worker: str) -> str:
        """Everything ``worker`` wrote so far."""
        ...

    def kill_worker(self, worker: str) -> None:
        """SIGKILL what runs the worker's tasks; return once the broker would hand the
        tasks it held to a worker that starts now."""
        ...


class _Records:
    """What every adapter shares: what the apps record in the tests' Redis (see the module
    docstring), and the rig's name, its integrations (``app``: the test app's module), its
    upstream and limiter (``harness``: its framework's)."""

    def __init__(self, redis_url: str, name: str, harness: Any, app: Any) -> None:
        self.records = redis.Redis.from_url(redis_url)
        self.name = name
        self.notion, self.github = app.NOTION, app.GITHUB
        self.upstream = harness.upstream
        self.limiter = harness.limiter

    def _lines(self, what: str) -> list[list[str]]:
        return [r.decode().split() for r in self.records.lrange(f"{PREFIX}:{what}", 0, -1)]

    def requeued(self, reason: str | None = None) -> list[str]:
        lines = self._lines("requeues")
        return [task_id for task_id, why in lines if reason is None or why == reason]

    def waits(self) -> list[Wait]:
        return [Wait(name, task_id, float(s)) for name, task_id, s in self._lines("granted")]

    def holding(self) -> list[str]:
        return [task_id for task_id, _pid in self._lines("holding")]

    def release(self) -> None:
        self.records.set(f"{PREFIX}:released", 1)

    def runs(self, task_id: str) -> int | None:
        return int(self.records.get(f"{PREFIX}:runs:{task_id}") or 0)

    def ticket_kept(self, task_id: str) -> bool | None:
        return None

    def close(self) -> None:
        self.records.close()


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every process under it (a whole worker, nothing left over)."""
    for target in [pid, *_descendants(pid)]:
        with suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)


# -- Celery -----------------------------------------------------------------------------------


TASK_NAMES = {  # the test apps' names, the same on Celery and Dramatiq
    "notion": "tests.sync_notion",
    "notion_no_retry": "tests.sync_notion",
    "github": "tests.sync_repo",
    "throttled": "tests.throttled",
    "held": "tests.held",
}


class CeleryAdapter(_Records):
    def __init__(self, harness: CeleryRig, redis_url: str, visibility: float) -> None:
        super().__init__(redis_url, f"celery-{harness.kind}", harness, capp)
        self.harness = harness
        self.visibility = visibility
        self.queues: dict[str, set[str]] = {}

    def start_worker(self, queues: Sequence[str], concurrency: int = 4) -> str:
        name = f"w{len(self.harness.workers) + 1}"
        node = self.harness.start_worker(name, list(queues), concurrency=concurrency)
        self.queues[node] = set(queues)
        return node

    def task_name(self, task: str) -> str:
        return TASK_NAMES[task]

    def max_wait(self, task: str) -> float:
        return float(capp.COMMON["max_wait"])

    def send(self, task: str, queue: str, *args: Any) -> str:
        return self.harness.send(TASK_NAMES[task], list(args), queue)

    def wait_all(self, ids: Sequence[str], timeout: float) -> list[Any]:
        values = wait_all(self.harness.results(list(ids)), timeout)
        return [_celery_failure(v) if isinstance(v, BaseException) else v for v in values]

    def failed(self) -> dict[str, str]:
        """Tasks in the FAILURE state whose ``task_failure`` signal fired."""
        records = dict(line for line in self._lines("failures"))
        return {i: name for i, name in records.items() if self._result(i).state == "FAILURE"}

    def retries(self, ids: Sequence[str]) -> list[int | None]:
        """A finished task's own count; for a failed one, the task_retry signals that were
        real retries, not requeues (celery_app._record_retry)."""
        real = [task_id for task_id, requeue in self._lines("retries") if requeue == "0"]
        values = [self._result(i).result for i in ids]
        return [
            v["retries"] if isinstance(v, dict) else real.count(i)
            for i, v in zip(ids, values, strict=True)
        ]

    def later(self, ids: Sequence[str]) -> dict[str, float | None]:
        return {i: None for i in ids if self._result(i).state in ("PENDING", "RETRY")}

    def paused(self, worker: str) -> set[str]:
        return self.queues[worker] - self.harness.active_queues(worker)

    def waiting(self, queue: str) -> int:
        return self.harness.waiting(queue)

    def log(self, worker: str) -> str:
        return self.harness.log_of(worker, whole=True)

    def kill_worker(self, worker: str) -> None:
        self.harness.kill(worker)
        if self.harness.kind == "redis":  # the broker hands a dead worker's unacked tasks on
            # once the visibility timeout has passed, to a worker that starts
            held = self.harness.held_longer_than
            wait_until(lambda: held(self.visibility), timeout=30, every=0.1)

    def _result(self, task_id: str) -> AsyncResult:
        return self.harness.client.AsyncResult(task_id)


def _celery_failure(exc: BaseException) -> Failure:
    return Failure(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc))


# -- Dramatiq ---------------------------------------------------------------------------------


class DramatiqAdapter(_Records):
    def __init__(self, harness: DramatiqRig, redis_url: str, kills: bool) -> None:
        super().__init__(redis_url, f"dramatiq-{harness.kind}", harness, dapp)
        self.harness = harness
        self.env = {"QRL_HEARTBEAT_TIMEOUT": KILL_HEARTBEAT_MS} if kills else {}
        self.sent: dict[str, Message[Any]] = {}

    def start_worker(self, queues: Sequence[str], concurrency: int = 4) -> str:
        return str(self.harness.start_worker(list(queues), threads=concurrency, **self.env))

    def task_name(self, task: str) -> str:
        return TASK_NAMES[task]

    def max_wait(self, task: str) -> float:
        if task == "github":  # the actor's own, below the integration's
            return dapp.GITHUB_MAX_WAIT
        return float(dapp.COMMON["max_wait"])

    def send(self, task: str, queue: str, *args: Any) -> str:
        if task == "github":
            args = ("acme", *args)
        message = self.harness.send(TASK_NAMES[task], queue, *args)
        self.sent[message.message_id] = message
        return message.message_id

    def wait_all(self, ids: Sequence[str], timeout: float) -> list[Any]:
        values = self.harness.results_of([self.sent[i] for i in ids], timeout)
        return [
            Failure(v.orig_exc_type, v.orig_exc_msg) if isinstance(v, ResultFailure) else v
            for v in values
        ]

    def failed(self) -> dict[str, str]:
        """The messages in the dead-letter queues."""
        return {i: self._error(i) for i in self._dead_letters()}

    def retries(self, ids: Sequence[str]) -> list[int | None]:
        dead = self._dead_letters()
        spent: list[int | None] = []
        for task_id in ids:
            value = self._value(task_id)
            if isinstance(value, dict):
                spent.append(value["retries"])
            else:
                message = dead.get(task_id)
                spent.append(message.options.get("retries", 0) if message else None)
        return spent

    def later(self, ids: Sequence[str]) -> dict[str, float | None]:
        return {i: None for i in ids if not self.harness.has_result(self.sent[i])}

    def paused(self, worker: str) -> set[str]:
        """From the worker's log: the queues whose last breaker line says paused."""
        log = self.harness.log(int(worker))
        return {
            name
            for name in dapp.CONFIGS
            if log.rfind(f"breaker of {name} is open: queue paused")
            > log.rfind(f"breaker of {name}: queue resumed")
        }

    def waiting(self, queue: str) -> int:
        return self.harness.waiting(queue)

    def log(self, worker: str) -> str:
        return self.harness.log(int(worker))

    def kill_worker(self, worker: str) -> None:
        """The CLI's process and its worker process (a Redis broker hands the messages on
        once the dead worker's heartbeat is old: see dramatiq_app)."""
        proc, _log = self.harness.workers[int(worker)]
        _kill_tree(proc.pid)
        proc.wait(timeout=30)

    def _dead_letters(self) -> dict[str, Message[Any]]:
        found = {}
        for queue in (self.notion, self.github):
            try:
                found.update({m.message_id: m for m in self.harness.dead_letters(queue)})
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:  # RabbitMQ: no worker declared this queue
                    raise
        return found

    def _value(self, task_id: str) -> Any:
        message = self.sent.get(task_id)
        if message is None:
            return None
        try:
            return self.harness.results.get_result(message)
        except (ResultFailure, ResultMissing) as exc:
            return exc

    def _error(self, task_id: str) -> str:
        value = self._value(task_id)
        return value.orig_exc_type if isinstance(value, ResultFailure) else "unknown"


# -- RQ ---------------------------------------------------------------------------------------


RQ_TASKS: dict[str, tuple[Any, int, dict[str, Any]]] = {
    # the job's function, the retries RQ may spend on it (its Retry), more enqueue options
    "notion": (jobs.sync_notion, 2, {}),
    "notion_no_retry": (jobs.sync_notion, 0, {}),
    "github": (jobs.sync_repo, 2, {}),
    "throttled": (jobs.always_throttled, 2, {}),
    "held": (jobs.held, 1, {"job_timeout": 10}),  # abandoned 10 + 60 s after it started
}


class RQAdapter(_Records):
    def __init__(self, harness: RQRig, redis_url: str, kills: bool) -> None:
        super().__init__(redis_url, f"rq-{harness.kind}", harness, jobs)
        self.harness = harness
        if kills:  # a job abandoned by a dead worker is found within a second of expiring
            harness.worker_options = ["--maintenance-interval", "1"]
        self.retry: dict[str, int] = {}

    def start_worker(self, queues: Sequence[str], concurrency: int = 4) -> str:
        return self.harness.start_worker(list(queues))

    def task_name(self, task: str) -> str:
        return f"{jobs.__name__}.{RQ_TASKS[task][0].__name__}"

    def max_wait(self, task: str) -> float:
        return float(jobs.COMMON["max_wait"])

    def send(self, task: str, queue: str, *args: Any) -> str:
        func, retries, options = RQ_TASKS[task]
        if task == "github":
            args = ("acme", *args)
        retry = Retry(max=retries) if retries else None
        job_id: str = self.harness.enqueue(queue, func, *args, retry=retry, **options).id
        self.retry[job_id] = retries
        return job_id

    def wait_all(self, ids: Sequence[str], timeout: float) -> list[Any]:
        wait_until(lambda: self.harness.all_done(list(ids)), timeout=timeout, every=0.1)
        return [
            job.return_value() if job.get_status() == "finished" else _rq_failure(job)
            for job in self.harness.fetch(list(ids))
        ]

    def failed(self) -> dict[str, str]:
        """The jobs in the FailedJobRegistry, failed, their latest result a failure."""
        found = {}
        for queue in (self.notion, self.github):
            ids = FailedJobRegistry(queue, connection=self.harness.connection).get_job_ids()
            for job in self.harness.fetch(ids):
                failure = _rq_failure(job)
                if job.get_status() == "failed" and failure is not None:
                    found[job.id] = failure.error.rpartition(".")[2]
        return found

    def retries(self, ids: Sequence[str]) -> list[int | None]:
        """RQ's ``Retry`` spent, its retry counter, and the runs that left a result before
        the last (a failed run that was retried leaves one)."""
        spent: list[int | None] = []
        for job in self.harness.fetch(list(ids)):
            given = self.retry[job.id]
            used = given - (job.retries_left or 0) if given else 0
            spent.append(used + (job.number_of_retries or 0) + len(job.results()) - 1)
        return spent

    def later(self, ids: Sequence[str]) -> dict[str, float | None]:
        """The jobs scheduled, in RQ's ScheduledJobRegistry, with their time."""
        found: dict[str, float | None] = {}
        for job in self.harness.fetch(list(ids)):
            registry = ScheduledJobRegistry(job.origin, connection=self.harness.connection)
            if job.get_status() == "scheduled" and job.id in registry:
                found[job.id] = registry.get_scheduled_time(job.id).timestamp()
        return found

    def ticket_kept(self, task_id: str) -> bool | None:
        (job,) = self.harness.fetch([task_id])
        return TICKET_HEADER in job.meta

    def paused(self, worker: str) -> set[str]:
        return self.harness.paused(worker)

    def waiting(self, queue: str) -> int:
        return int(self.harness.queue(queue).count)

    def log(self, worker: str) -> str:
        return self.harness.log_of(worker, whole=True)

    def kill_worker(self, worker: str) -> None:
        """The forking worker: its work horse (the worker sees it die and fails the job, or
        retries it). The simple worker: the worker itself and its scheduler (the job is
        abandoned: once its heartbeat expires, a worker's maintenance retries or fails it)."""
        proc = next(p for name, p, _ in self.harness.workers if name == worker)
        if self.harness.kind == "simple":
            _kill_tree(proc.pid)
            proc.wait(timeout=30)
            return
        horses = [pid for pid in _descendants(proc.pid) if _leads_group(pid)]
        assert horses, f"{worker} has no work horse to kill"
        for pid in horses:
            os.kill(pid, signal.SIGKILL)


def _leads_group(pid: int) -> bool:
    """An RQ work horse puts itself in a process group of its own (the scheduler does not)."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _rq_failure(job: Job) -> Failure | None:
    result = job.latest_result()
    if result is None or result.type != Result.Type.FAILED or not result.exc_string:
        return None
    last = result.exc_string.strip().splitlines()[-1]
    return Failure(last.split(":", 1)[0], result.exc_string)


# -- one rig, by name -------------------------------------------------------------------------


@contextmanager
def open_rig(
    name: str,
    redis_url: str,
    *,
    kills: bool = False,
    limiter_url: str | None = None,
    **upstream: Any,
) -> Iterator[Rig]:
    """The rig called ``name`` (see RIGS) with a hidden-limit upstream made of ``upstream``;
    ``kills``: the scenario kills workers (brokers that hand a dead worker's tasks on after
    a timeout get a short one); ``limiter_url``: the limiter's state in another store."""
    framework, kind = name.split("-")
    adapter: CeleryAdapter | DramatiqAdapter | RQAdapter
    with ExitStack() as stack:
        if framework == "celery":
            visibility = KILL_VISIBILITY if kills else 3600.0
            celery = celery_rig(
                kind,
                redis_url,
                visibility_timeout=visibility,
                limiter_url=limiter_url,
                **upstream,
            )
            adapter = CeleryAdapter(stack.enter_context(celery), redis_url, visibility)
        elif framework == "dramatiq":
            dramatiq = stack.enter_context(dramatiq_rig(kind, redis_url, limiter_url, **upstream))
            adapter = DramatiqAdapter(dramatiq, redis_url, kills)
        else:
            rq = stack.enter_context(rq_rig(kind, redis_url, limiter_url, **upstream))
            adapter = RQAdapter(rq, redis_url, kills)
        stack.callback(adapter.close)
        yield adapter

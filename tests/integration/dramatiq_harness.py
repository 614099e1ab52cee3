"""Real Dramatiq workers for the tests: CLI subprocesses on a real broker, a client, cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import redis
from dramatiq import Message
from dramatiq.broker import Broker
from dramatiq.results import ResultFailure, ResultTimeout

from queue_ratelimit import Limiter
from queue_ratelimit.backends import open_backend
from queue_ratelimit.testing import HiddenLimitUpstream

# one prefix per test session: limiter keys, broker and result keys, the integrations' names
os.environ.setdefault("QRL_PREFIX", f"qrltest-{uuid.uuid4().hex[:8]}")
from tests.integration import dramatiq_app as dapp
from tests.support import delete_keys, purge_store, stop_workers

ROOT = Path(__file__).resolve().parents[2]
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
READY = "Worker process is ready for action."


class DramatiqRig:
    """One test's broker, workers, upstream and limiter, torn down afterwards."""

    def __init__(
        self,
        broker: str,
        redis_url: str,
        upstream: HiddenLimitUpstream,
        limiter_url: str | None = None,
    ) -> None:
        self.kind = broker
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url)
        self.upstream = upstream
        self.broker_url = redis_url if broker == "redis" else RABBITMQ_URL
        self.client: Broker = dapp.make_broker(self.broker_url, middleware=[])
        self.results = dapp.results_backend(redis_url)
        self.limiter_url = limiter_url or redis_url  # the limiter's state (results: redis_url)
        self.limiter = Limiter(open_backend(self.limiter_url, prefix=dapp.PREFIX), dapp.CONFIGS)
        self.workers: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start_worker(self, queues: list[str], threads: int = 4, **env: str) -> int:
        """Start ``dramatiq`` (one worker process) and wait until it is ready; its index."""
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open for the worker's lifetime
            prefix="qrl-dramatiq-", suffix=".log", delete=False
        )
        command = [
            sys.executable,
            "-m",
            "dramatiq",
            "tests.integration.dramatiq_app",
            "--processes",
            "1",
            "--threads",
            str(threads),
            "--worker-shutdown-timeout",
            "10000",
            "--queues",
            *queues,
        ]
        env = {
            **os.environ,
            "QRL_BROKER": self.broker_url,
            "QRL_REDIS": self.redis_url,
            "QRL_LIMITER": self.limiter_url,
            "QRL_UPSTREAM": self.upstream.url,
            "QRL_WORKER": "1",  # the app connects its recording receivers only in workers
            **env,
        }
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append((proc, log))
        index = len(self.workers) - 1
        deadline = time.monotonic() + 60
        while READY not in self.log(index):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the worker did not start:\n{self.log(index)}")
            time.sleep(0.05)
        return index

    def log(self, index: int) -> str:
        return Path(self.workers[index][1].name).read_text(errors="replace")

    def send(self, actor: str, queue: str, *args: Any) -> Message[Any]:
        message: Message[Any] = Message(
            queue_name=queue, actor_name=actor, args=args, kwargs={}, options={}
        )
        return self.client.enqueue(message)

    def results_of(self, messages: list[Message[Any]], timeout: float) -> list[Any]:
        """Each message's result, waiting with a deadline; failures come back as exceptions."""
        deadline = time.monotonic() + timeout
        values: list[Any] = []
        for message in messages:
            left = max(100, int((deadline - time.monotonic()) * 1000))
            try:
                values.append(self.results.get_result(message, block=True, timeout=left))
            except ResultFailure as exc:
                values.append(exc)
            except ResultTimeout as exc:
                raise AssertionError(f"no result for {message.message_id}") from exc
        return values

    def has_result(self, message: Message[Any]) -> bool:
        return bool(self.redis.exists(self.results.build_message_key(message)))

    def waiting(self, queue: str) -> int:
        """Messages of ``queue`` still in the broker, ready for a consumer."""
        if self.kind == "redis":
            return int(self.redis.llen(f"{dapp.NAMESPACE}:{queue}"))
        return self._rabbit(lambda ch: ch.queue_declare(queue, passive=True).method.message_count)

    def dead_letters(self, queue: str) -> list[Message[Any]]:
        """The messages in ``queue``'s dead-letter queue (left there)."""
        if self.kind == "redis":
            data = self.redis.hvals(f"{dapp.NAMESPACE}:{queue}.XQ.msgs")
            return [Message.decode(d) for d in data]

        def drain(channel: Any) -> list[Message[Any]]:
            found = []
            while True:
                method, _, body = channel.basic_get(f"{queue}.XQ", auto_ack=False)
                if method is None:
                    return found
                found.append(Message.decode(body))

        return self._rabbit(drain)  # unacked gets go back when the channel closes

    def _rabbit(self, work: Any) -> Any:
        connection = pika.BlockingConnection(pika.URLParameters(self.broker_url))
        try:
            return work(connection.channel())
        finally:
            connection.close()

    def close(self) -> None:
        stop_workers(self.workers, timeout=30)
        self._purge()

    def _purge(self) -> None:
        delete_keys(self.redis, f"{dapp.PREFIX}-*", f"{{{dapp.PREFIX}:*", f"{dapp.PREFIX}:*")
        if self.limiter_url != self.redis_url:  # (the limiter's rows in another store)
            purge_store(self.limiter, dapp.CONFIGS)
        if self.kind == "rabbitmq":

            def delete(channel: Any) -> None:
                for name in dapp.CONFIGS:
                    for queue in (name, f"{name}.DQ", f"{name}.XQ"):
                        channel.queue_delete(queue)

            self._rabbit(delete)
        self.client.close()
        self.redis.close()


@contextmanager
def dramatiq_rig(
    broker: str, redis_url: str, limiter_url: str | None = None, **upstream: Any
) -> Iterator[DramatiqRig]:
    """A rig; ``limiter_url`` puts the limiter's state elsewhere (any store's URL)."""
    with HiddenLimitUpstream(**upstream) as server:
        rig = DramatiqRig(broker, redis_url, server, limiter_url)
        try:
            yield rig
        finally:
            rig.close()

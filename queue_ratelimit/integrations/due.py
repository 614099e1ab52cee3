"""Requeued tasks wait in Redis until due, and only the latest copy of a task runs.

A task that must wait is not handed back to the broker with a countdown: between taking a
message off a queue and recording it as unacknowledged, a broker client killed at the wrong
instant loses it (kombu's Redis transport does the two in separate commands), and a message
held for its countdown sits in worker memory. Instead, like RQ's, Sidekiq's and BullMQ's
scheduled sets:

* **park**: the running delivery writes the task's next message into a due set in the
  limiter's Redis, in one script call that also makes the new copy the task's latest, and
  only then is the delivery acknowledged. A worker killed before the call leaves the delivery
  unacknowledged (the broker delivers it again); killed after it, the task is in the due set
  and the delivery, when delivered again, is stale.
* **claim**: a worker promotes due tasks: one script call claims a batch (each gets a new
  copy token) and the worker publishes each. A claimed task stays in the due set until its
  copy reaches a worker: a copy lost on the way (a promoter killed before it published, a
  broker client killed between taking the message and recording it as unacknowledged)
  leaves the claim to lapse, and the task is claimed again with a newer token, after
  ``claim`` seconds, then twice as long each time in a row (a copy may just be waiting
  behind a long queue), at most 64 times as long.
* **check**: a delivery that is a copy (it carries a token) or was delivered before is
  checked first: a stale copy is acknowledged and dropped (one DEBUG line), the latest one
  runs; the arrival of a claimed copy settles its task.

A framework whose broker already holds delayed messages durably (Dramatiq) publishes the copy
itself: **park** without a message marks the new copy pending, the copy is published, then
the running delivery is acknowledged; a worker killed in between leaves two deliveries of
which the first to arrive runs and the other is stale.

**track** (a Redis broker): an original is written to a sent set of its queue when it is
published and taken out when a worker receives it. Once a worker is found dead (it stopped
beating), an original published before that, neither received nor still in its queue (the
caller reads the queue's oldest message), was lost in that window: it is claimed as a copy
whose token starts with ``o``, so the original is stale should it still arrive.

Each task's latest token is kept ``keep`` seconds after its last change (longer than any
stale copy can take to come back: a Redis broker's ``visibility_timeout``), then forgotten: a
task with no token kept is unknown, and any copy of it runs. The keys of the tokens expire
when no worker has written to them for that long; the keys holding parked tasks never
expire. All keys of one scope share a hash tag: ``{<prefix>:tasks:<scope>}:due`` and so on.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from typing import Any

import redis

from queue_ratelimit.backends.redis_connect import Client
from queue_ratelimit.errors import BackendError
from queue_ratelimit.limiter import Limiter

__all__ = ["Claimed", "DueTasks", "due_tasks"]

log = logging.getLogger(__name__)

KEEP = 7200.0
"""Seconds a task's latest copy token is kept after its last change."""

CLAIM = 10.0
"""Seconds a claimed task waits for its copy to reach a worker before it is claimed again
(doubled each time in a row)."""

MOST = 100
"""The most tasks claimed in one call."""

MARK = 120.0
"""Seconds the receipt of an untracked original is remembered (its publisher's ``sent``
may come after it)."""


def _source() -> str:
    return (importlib.resources.files(__package__) / "lua" / "due.lua").read_text("utf-8")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Claimed:
    """A due task claimed for promotion: publish ``message`` with copy ``token``."""

    task_id: str
    token: str
    message: str


class DueTasks:
    """The due set and latest copies of one scope (one broker's tasks) in one Redis.

    Args:
        client: the limiter's Redis client.
        prefix: the limiter's key prefix.
        scope: which tasks: one broker's (two apps on two brokers sharing a limiter must not
            promote each other's tasks).
        keep: seconds a latest-copy token is kept after its last change.
        claim: seconds a claim waits for its copy to arrive before the task is claimed again.
        most: the most tasks claimed per call.

    Every method raises ``BackendError`` when Redis fails.
    """

    def __init__(
        self,
        client: Client,
        prefix: str,
        scope: str,
        *,
        keep: float = KEEP,
        claim: float = CLAIM,
        most: int = MOST,
    ) -> None:
        if not keep > 0 or not claim > 0 or most < 1:
            raise ValueError("keep and claim must be > 0 seconds, most >= 1")
        tag = f"{{{prefix}:tasks:{scope}}}"
        self.keys = (tag + ":due", tag + ":messages", tag + ":copies", tag + ":forget")
        self._tag = tag
        self._client = client
        self._script = client.register_script(_source())  # type: ignore[misc]
        self.keep, self.claim_for, self.most = keep, claim, most

    def _call(self, *args: str | int | float, key: str | None = None) -> object:
        keys = self.keys if key is None else (*self.keys, key)
        try:
            return self._script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise BackendError(f"redis due-set {args[0]} failed: {exc}") from exc

    def sent_key(self, queue: str) -> str:
        """The key of the originals published to ``queue`` and not yet received."""
        return f"{self._tag}:sent:{queue}"

    @property
    def consumers_key(self) -> str:
        """The key of the workers' beats."""
        return f"{self._tag}:consumers"

    def purge(self, *queues: str) -> None:
        """Delete the scope's keys: every parked task and every copy token (the demo's end),
        and the originals tracked for ``queues``."""
        keys = (*self.keys, self.consumers_key, *(self.sent_key(q) for q in queues))
        try:
            self._client.delete(*keys)
        except redis.RedisError as exc:
            raise BackendError(f"redis due-set purge failed: {exc}") from exc

    def durability(self) -> list[str]:
        """What about this Redis could lose parked tasks (empty when nothing, or when the
        server refuses ``CONFIG GET``, as managed services may)."""
        try:
            config: dict[str, str] = {}
            for name in ("maxmemory-policy", "appendonly", "save"):
                answer: dict[Any, Any] = self._client.config_get(name)  # type: ignore[assignment]
                config.update((_text(key), _text(value)) for key, value in answer.items())
        except redis.RedisError:
            return []
        problems = []
        if config.get("maxmemory-policy", "").startswith("allkeys"):
            problems.append(
                f"maxmemory-policy {config['maxmemory-policy']} may evict parked tasks "
                "(use noeviction or volatile-*)"
            )
        if config.get("appendonly") == "no" and not config.get("save"):
            problems.append("it keeps nothing on disk: a restart loses the parked tasks")
        return problems

    def park(
        self,
        task_id: str,
        token: str | None,
        new: str,
        countdown: float,
        message: str | None,
        *,
        fresh: bool = False,
    ) -> bool:
        """Make copy ``new`` the task's latest, its ``message`` due in ``countdown`` s.

        Without ``message`` the caller publishes the copy itself, then acknowledges the run
        copy: ``new`` is pending until then, and if both arrive (killed in between) the first
        to arrive is the latest.

        ``fresh``: the running copy is an original's first delivery, which cannot be stale
        (a task id used again after an earlier task's requeues is then not refused).

        Returns:
            False, writing nothing, when the running copy ``token`` is not the latest.
        """
        args = ("park", task_id, token or "", new, repr(max(0.0, countdown)), message or "")
        parked = bool(self._call(*args, repr(self.keep), "1" if fresh else "0"))
        if not parked:
            log.debug("queue_ratelimit: task %s: stale copy dropped", task_id)
        return parked

    def drop(self, task_id: str) -> bool:
        """Take a parked task out for good (revoked, expired, unknown to the workers)."""
        return bool(self._call("drop", task_id))

    def check(self, task_id: str, token: str | None) -> bool:
        """Whether copy ``token`` (``None``: the original message) is the task's latest."""
        latest = bool(self._call("check", task_id, token or "", repr(self.keep)))
        if not latest:
            log.debug("queue_ratelimit: task %s: stale copy dropped", task_id)
        return latest

    def claim(self) -> tuple[list[Claimed], float | None]:
        """Claim the due tasks (at most ``most``).

        Returns:
            The claimed tasks, and seconds until the next one is due (``None``: none is).
        """
        reply = self._call("claim", self.most, repr(self.claim_for), repr(self.keep))
        if not isinstance(reply, list) or not reply:
            raise BackendError(f"redis due-set claim answered {reply!r}")
        soonest = int(reply[0])
        items = [_text(item) for item in reply[1:]]
        claimed = [Claimed(*items[i : i + 3]) for i in range(0, len(items), 3)]
        return claimed, None if soonest < 0 else soonest / 1e6

    def sent(self, queue: str, task_id: str, message: str, at: float) -> bool:
        """Track an original just published to ``queue`` at ``at`` (the publisher's clock).

        Returns:
            False, writing nothing, when a worker received it already.
        """
        args = ("sent", task_id, message, repr(at), repr(self.keep))
        return bool(self._call(*args, key=self.sent_key(queue)))

    def received(self, queue: str, task_id: str) -> bool:
        """A worker received an original from ``queue``: whether to run it (``False``: a
        copy was published in its stead when it looked lost)."""
        fresh = bool(self._call("received", task_id, repr(MARK), key=self.sent_key(queue)))
        if not fresh:
            log.debug("queue_ratelimit: task %s: stale original dropped", task_id)
        return fresh

    def lost(
        self, queue: str, before: float, horizon: float | None = None
    ) -> tuple[list[Claimed], int]:
        """Claim the originals published to ``queue`` before ``before`` that no worker
        received (the caller knows they are not in the queue either).

        Returns:
            The claimed ones, and how many originals published before ``horizon`` (default
            ``before``) are still tracked (waiting in the queue, or received meanwhile).
        """
        args = ("lost", repr(before), self.most, repr(self.claim_for), repr(self.keep))
        horizon = before if horizon is None else horizon
        reply = self._call(*args, repr(horizon), key=self.sent_key(queue))
        if not isinstance(reply, list) or not reply:
            raise BackendError(f"redis due-set lost answered {reply!r}")
        items = [_text(item) for item in reply[1:]]
        claimed = [Claimed(*items[i : i + 3]) for i in range(0, len(items), 3)]
        return claimed, int(reply[0])

    def beat(self, member: str, at: float, dead_after: float) -> float:
        """``member`` (one worker process) is alive at ``at``; workers silent for
        ``dead_after`` s are found dead. Returns when one was last found dead (0: never)."""
        args = ("beat", member, repr(at), repr(dead_after), repr(self.keep))
        return float(_text(self._call(*args, key=self.consumers_key)))  # type: ignore[arg-type]

    def leave(self, member: str) -> None:
        """``member`` stopped cleanly: its silence is not a death."""
        self._call("leave", member, key=self.consumers_key)

    def loss(self, at: float) -> None:
        """A worker's broker connection broke at ``at`` (a message it was taking may be
        lost): counted as a death."""
        self._call("loss", repr(at), key=self.consumers_key)


def due_tasks(limiter: Limiter, scope: str, **options: Any) -> DueTasks | None:
    """A ``DueTasks`` in the limiter's Redis, or ``None`` when its backend is not Redis."""
    from queue_ratelimit.backends.redis import RedisBackend

    backend = limiter.backend
    if not isinstance(backend, RedisBackend):
        return None
    return DueTasks(backend.client, backend.prefix, scope, **options)

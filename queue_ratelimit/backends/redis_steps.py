"""Each Redis op written once, as steps; run on a blocking client or on ``redis.asyncio``.

An op (an acquire, a report, a snapshot) is a generator that yields the script calls it
needs, ``(op, integration, EVALSHA arguments)``, receives each answer, and returns its result;
a ``BackendError`` is thrown back into it where the call was. ``ScriptRunner._drive`` answers
the calls on the blocking client, ``_adrive`` on an asyncio client of the same server: what
an op decides is written once, and only the I/O differs (``limiter.lua`` decides in Redis).

The asyncio client belongs to the event loop that made it (its connections do), so the
runner keeps one per loop: the one handed in, or one made from the backend's URL.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

import redis
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    NoScriptError,
    ReadOnlyError,
    TryAgainError,
)

from queue_ratelimit.backends.redis_connect import (
    AsyncClient,
    Client,
    aclose_client,
    async_client_from_url,
    async_twin,
)
from queue_ratelimit.errors import BackendError, ConfigError

T = TypeVar("T")
Call = tuple[str, str, Sequence[Any]]
"""A script call an op's steps yield: its op's name, the integration, EVALSHA's arguments
after the script's digest."""
Steps = Generator[Call, Any, T]

# Errors of a cluster that moves slots or fails over, or of a replica just demoted: retried
# within ``transient_retry`` seconds before they count as an outage. (A multi-key script
# whose keys are half moved answers TRYAGAIN; the usual decision passes one key and is
# redirected instead.)
TRANSIENT = (TryAgainError, AskError, ClusterDownError, ClusterError, ReadOnlyError)


class Patience:
    """How long one call retries a transient error: pauses doubling from 20 ms to 200 ms,
    for ``within`` seconds from the first error."""

    def __init__(self, within: float) -> None:
        self._deadline = time.monotonic() + within
        self._pause = 0.02

    def pause(self, op: str, integration: str, exc: redis.RedisError) -> float:
        """Seconds to pause before the next try; ``BackendError`` once past the deadline."""
        pause = self._pause
        if time.monotonic() + pause > self._deadline:
            raise BackendError(f"redis {op} failed for {integration!r}: {exc}") from exc
        self._pause = min(pause * 2, 0.2)
        return pause


class ScriptRunner:
    """Runs ops' steps: ``_drive`` on ``client``, ``_adrive`` on the running loop's asyncio
    client (see ``async_source``)."""

    client: Client
    _sha: str
    _source: str
    _transient_retry: float

    def _init_async(self, source: AsyncClient | str | None) -> None:
        """Where the asyncio clients come from: a URL (a client made per loop), a client
        (used as it is: the caller's to close), or None: a twin of the blocking client's
        server, made per loop (none for a Cluster or Sentinel client)."""
        self._async_source: AsyncClient | Callable[[], AsyncClient | None] | None
        if isinstance(source, str):
            url = source
            self._async_source = lambda: async_client_from_url(url)
        elif source is None:
            self._async_source = None if async_twin(self.client) is None else self._twin
        else:
            self._async_source = source
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

    def _twin(self) -> AsyncClient | None:
        return async_twin(self.client)

    def check_async(self) -> None:
        """Raise ``ConfigError`` when this backend cannot run under an event loop: it was
        given a Cluster or Sentinel client, without a URL or an asyncio client."""
        if self._async_source is None:
            raise ConfigError(
                None,
                "async_client",
                None,
                "a Cluster or Sentinel client was given: give the backend its URL, or a "
                "redis.asyncio client as async_client=",
            )

    async def _aclient(self) -> Any:
        """The running loop's asyncio client; a cluster's is started (its map of the slots
        read) by one caller while the others wait: redis-py's cluster client races when
        its first calls run concurrently."""
        source = self._async_source
        if source is None:
            self.check_async()
        if not callable(source):
            return source
        loop = asyncio.get_running_loop()
        made = self._async_clients.get(loop)
        if made is None:
            for closed in [each for each in self._async_clients if each.is_closed()]:
                del self._async_clients[closed]  # (its client holds the loop: never collected)
            made = self._async_clients[loop] = (source(), asyncio.Lock())
        client, starting = made
        if isinstance(client, AsyncCluster) and client._initialize:
            async with starting:
                try:
                    await client.initialize()  # (returns at once once started)
                except redis.RedisError as exc:
                    raise BackendError(f"redis cluster unavailable: {exc}") from exc
        return client

    async def aclose(self) -> None:
        """Close the asyncio client this backend made for the running loop (one handed in
        is the caller's to close; the blocking client stays open)."""
        made = self._async_clients.pop(asyncio.get_running_loop(), None)
        if made is not None:
            await aclose_client(made[0])

    def _run(self, op: str, integration: str, args: Sequence[Any]) -> Any:
        """One EVALSHA; the script is loaded when the server lacks it, and a moving slot or
        a failover is retried for a short while (``Patience``)."""
        patience = None
        while True:
            try:
                try:
                    return self.client.evalsha(self._sha, *args)
                except NoScriptError:  # a new or restarted server, or SCRIPT FLUSH
                    self.client.script_load(self._source)
                    return self.client.evalsha(self._sha, *args)
            except TRANSIENT as exc:
                patience = patience or Patience(self._transient_retry)
                time.sleep(patience.pause(op, integration, exc))
            except redis.RedisError as exc:
                raise BackendError(f"redis {op} failed for {integration!r}: {exc}") from exc

    async def _arun(self, op: str, integration: str, args: Sequence[Any]) -> Any:
        """``_run`` on the running loop's asyncio client."""
        client = await self._aclient()
        patience = None
        while True:
            try:
                try:
                    return await client.evalsha(self._sha, *args)
                except NoScriptError:
                    await client.script_load(self._source)
                    return await client.evalsha(self._sha, *args)
            except TRANSIENT as exc:
                patience = patience or Patience(self._transient_retry)
                await asyncio.sleep(patience.pause(op, integration, exc))
            except redis.RedisError as exc:
                raise BackendError(f"redis {op} failed for {integration!r}: {exc}") from exc

    def _drive(self, steps: Steps[T]) -> T:
        """Run an op's steps on the blocking client."""
        reply: Any = None
        failure: BackendError | None = None
        while True:
            try:
                call = steps.send(reply) if failure is None else steps.throw(failure)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                reply, failure = self._run(*call), None
            except BackendError as exc:
                reply, failure = None, exc

    async def _adrive(self, steps: Steps[T]) -> T:
        """Run an op's steps on the running loop's asyncio client."""
        reply: Any = None
        failure: BackendError | None = None
        while True:
            try:
                call = steps.send(reply) if failure is None else steps.throw(failure)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                reply, failure = await self._arun(*call), None
            except BackendError as exc:
                reply, failure = None, exc

"""The limiter for asyncio code: ``Limiter``'s calls, awaited, with no blocking I/O.

``AsyncLimiter`` shares everything but the I/O with a ``Limiter`` (its ``sync``): the
configs, the requests and reports built from them, the outage policy and its state, the
signals. What a call decides is decided where the sync limiter decides it (``limiter.lua``
on Redis, ``policy/`` in memory); only the backend's calls are awaited: on Redis through
``redis.asyncio`` and the same script, in memory directly, on another backend in a worker
thread (``backends.base.awaited``). Waits are ``asyncio.sleep``::

    limiter = AsyncLimiter(RedisBackend("redis://localhost:6379/0"))
    async with limiter.call("notion", tenant="ws-1") as call:
        response = await client.get(url)
        call.answered(response.status_code, response.headers)

A sync and an async limiter can share one backend and one outage state:
``AsyncLimiter.sharing(limiter)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from queue_ratelimit.announce import announce_decision, announce_report
from queue_ratelimit.backends.base import Backend, awaited
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import RateLimited
from queue_ratelimit.limiter import Limiter, still_holds
from queue_ratelimit.outcome import Outcome, response_report
from queue_ratelimit.plans import Cost
from queue_ratelimit.policy.state import (
    BACKOFF,
    FAILURE,
    NO_FEEDBACK,
    SUCCESS,
    Decision,
    Feedback,
    Plan,
    Report,
    ReportResult,
    Reservation,
    Snapshot,
)

__all__ = ["AsyncCall", "AsyncLimiter"]


class AsyncLimiter:
    """Fleet-wide AIMD rate limits for coroutines: ``Limiter``'s methods, awaited.

    Args:
        backend: as ``Limiter`` (``MemoryBackend()`` when omitted). A ``RedisBackend`` made
            from a URL makes a ``redis.asyncio`` client per event loop; one given a Cluster
            or Sentinel client needs its URL or ``async_client=`` (``ConfigError`` here).
        configs: as ``Limiter``.
        sleep: how ``wait`` and ``call`` sleep; ``asyncio.sleep`` unless a test injects one.
        probe_interval: as ``Limiter`` (the outage policy).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        configs: Mapping[str, IntegrationConfig] | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        probe_interval: float = 2.0,
    ) -> None:
        self._init(Limiter(backend, configs, probe_interval=probe_interval), sleep)

    @classmethod
    def sharing(
        cls, limiter: Limiter, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> AsyncLimiter:
        """An async limiter over ``limiter``'s backend, configs and outage state (a Celery
        app's limiter, say, used from coroutines too)."""
        made = cls.__new__(cls)
        made._init(limiter, sleep)
        return made

    def _init(self, limiter: Limiter, sleep: Callable[[float], Awaitable[None]]) -> None:
        check = getattr(limiter.backend, "check_async", None)
        if check is not None:
            check()  # a backend that cannot make an asyncio client says so now
        self.sync = limiter
        self.backend = limiter.backend
        self._guard = limiter._guard
        self._sleep = sleep

    @property
    def configs(self) -> Mapping[str, IntegrationConfig]:
        """The integration configs, by name (the sync limiter's)."""
        return self.sync.configs

    def config(self, integration: str) -> IntegrationConfig:
        """See ``Limiter.config``."""
        return self.sync.config(integration)

    def costs(self, integration: str, cost: Cost) -> Mapping[str, float]:
        """See ``Limiter.costs``."""
        return self.sync.costs(integration, cost)

    def for_host(self, host: str, port: int | None = None, scheme: str = "https") -> str:
        """See ``Limiter.for_host``."""
        return self.sync.for_host(host, port, scheme)

    async def acquire(
        self,
        integration: str,
        tenant: str | None = None,
        cost: Cost = 1.0,
        *,
        max_wait: float | None = None,
        reserve: bool = True,
        reservation: Reservation | None = None,
        cooldown_wait: float | None = None,
        max_sleepers: int | None = None,
        refusal_event: str | None = None,
        tokens: bool = False,
    ) -> Decision:
        """See ``Limiter.acquire``: ask for a slot; never sleeps."""
        prepared, request = self.sync._acquire_request(
            integration,
            tenant,
            cost,
            max_wait,
            reserve,
            reservation,
            cooldown_wait,
            max_sleepers,
            refusal_event,
            tokens,
        )

        def op(backend: Backend, plan: Plan) -> Awaitable[Decision]:
            return awaited(backend, "acquire", request, plan)

        decision = await self._guard.acall(prepared, tenant, op)
        announce_decision(self.sync, request, decision, cost)
        return decision

    async def wait(
        self,
        integration: str,
        tenant: str | None = None,
        cost: Cost = 1.0,
        *,
        timeout: float | None = None,
    ) -> Decision:
        """See ``Limiter.wait``: acquire and ``await`` the computed wait.

        Raises:
            RateLimited: the slot is further than ``timeout`` (or ``max_wait``).
        """
        decision = await self._slot(integration, tenant, cost, timeout)
        if decision.wait > 0:
            await self._sleep(decision.wait)
        return decision

    async def _slot(
        self, integration: str, tenant: str | None, cost: Cost, timeout: float | None
    ) -> Decision:
        """``wait``'s grant, not yet slept; ``RateLimited`` past ``timeout``."""
        decision = await self.acquire(
            integration,
            tenant,
            cost,
            max_wait=timeout,
            reserve=False,
            cooldown_wait=None if timeout is None else 0.0,
        )
        if not decision.granted:
            raise RateLimited(decision.wait, integration, tenant)
        return decision

    def call(
        self,
        integration: str,
        tenant: str | None = None,
        cost: Cost = 1.0,
        *,
        timeout: float | None = None,
    ) -> AbstractAsyncContextManager[AsyncCall]:
        """``async with limiter.call(name, tenant) as call:`` waits for a slot (as ``wait``),
        runs the block, and reports it on the way out: what ``call.answered(...)`` recorded
        (read as ``report_response`` reads it), ``call.failed()``, or a success when the
        block recorded nothing. A block that raises reports nothing (an error of the
        caller's is no answer of the upstream's) and gives its concurrency lease back."""
        return _call(self, integration, tenant, cost, timeout)

    async def on_success(
        self,
        integration: str,
        tenant: str | None = None,
        *,
        lease: str | None = None,
        feedback: Feedback = NO_FEEDBACK,
    ) -> ReportResult:
        """See ``Limiter.on_success``."""
        return await self.report(Report(SUCCESS, integration, tenant, lease, feedback))

    async def on_backoff(
        self,
        integration: str,
        tenant: str | None = None,
        *,
        retry_after: float | None = None,
        epoch: int | None = None,
        lease: str | None = None,
        feedback: Feedback = NO_FEEDBACK,
        level: str | None = None,
        app_epoch: int | None = None,
    ) -> ReportResult:
        """See ``Limiter.on_backoff``."""
        return await self.report(
            Report(
                BACKOFF, integration, tenant, lease, feedback, epoch, retry_after, level, app_epoch
            )
        )

    async def on_failure(
        self,
        integration: str,
        tenant: str | None = None,
        *,
        lease: str | None = None,
        feedback: Feedback = NO_FEEDBACK,
    ) -> ReportResult:
        """See ``Limiter.on_failure``."""
        return await self.report(Report(FAILURE, integration, tenant, lease, feedback))

    async def report(self, report: Report) -> ReportResult:
        """See ``Limiter.report``."""
        prepared, closed = self.sync._report_checked(report)

        def op(backend: Backend, plan: Plan) -> Awaitable[ReportResult]:
            return awaited(backend, "report", report, plan)

        result = await self._guard.acall(
            prepared, report.tenant, op, closed=closed, lease=report.lease_id
        )
        announce_report(self.sync, report, result)
        return result

    async def report_response(
        self,
        integration: str,
        tenant: str | None,
        status: int | None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes | str | Mapping[str, object] | None = None,
        *,
        decision: Decision | None = None,
        estimated: Mapping[str, float] | None = None,
        actual: Mapping[str, float] | None = None,
    ) -> Outcome:
        """See ``Limiter.report_response``: never raises on the answer's content."""
        prepared = self.sync._resolve(integration, tenant)
        report, info = response_report(
            prepared, integration, tenant, status, headers, body, decision, estimated, actual
        )
        return Outcome(report.kind, info, await self.report(report))

    async def holds(self, integration: str, tenant: str | None, decision: Decision) -> bool:
        """See ``Limiter.holds``."""
        seen = await self._key_call(integration, tenant, "check", None, integration, tenant)
        return still_holds(seen, decision)

    async def release(self, integration: str, tenant: str | None, lease: str) -> bool:
        """See ``Limiter.release``."""
        released = await self._key_call(
            integration, tenant, "release", False, integration, tenant, lease, lease=lease
        )
        return bool(released)

    async def count(self, integration: str, event: str, tenant: str | None = None) -> None:
        """See ``Limiter.count``."""
        await self._key_call(integration, tenant, "count", None, integration, event, tenant)

    async def snapshot(self, integration: str, tenant: str | None = None) -> Snapshot:
        """See ``Limiter.snapshot``.

        Raises:
            BackendUnavailable: the shared backend is down.
        """
        prepared = self.sync._resolve(integration, tenant)

        def op(backend: Backend, plan: Plan) -> Awaitable[Snapshot]:
            return awaited(backend, "snapshot", integration, tenant, plan)

        return await self._guard.acall(prepared, tenant, op, fallback=False)

    async def _key_call(
        self,
        integration: str,
        tenant: str | None,
        name: str,
        closed: Any,
        *args: Any,
        lease: str | None = None,
    ) -> Any:
        """The backend's ``name(*args)`` on a key, through the outage policy (``closed``:
        the answer while the backend is down)."""
        prepared = self.sync._resolve(integration, tenant)

        def op(backend: Backend, _plan: Plan) -> Awaitable[Any]:
            return awaited(backend, name, *args)

        return await self._guard.acall(
            prepared, tenant, op, closed=lambda _error: closed, lease=lease
        )

    # the operator's calls: rare, run by the sync limiter in a worker thread

    async def app_snapshot(self, integration: str) -> Snapshot:
        """See ``Limiter.app_snapshot`` (an operator's read: in a worker thread)."""
        return await asyncio.to_thread(self.sync.app_snapshot, integration)

    async def stats(self, integration: str) -> dict[str, int]:
        """See ``Limiter.stats``."""
        return await asyncio.to_thread(self.sync.stats, integration)

    async def reset(self, integration: str, tenant: str | None = None) -> None:
        """See ``Limiter.reset``."""
        await asyncio.to_thread(self.sync.reset, integration, tenant)

    async def set_breaker(
        self, integration: str, state: str, open_seconds: float | None = None
    ) -> None:
        """See ``Limiter.set_breaker``."""
        await asyncio.to_thread(self.sync.set_breaker, integration, state, open_seconds)

    async def aclose(self) -> None:
        """Close the running event loop's asyncio Redis client, if the backend made one."""
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()


class AsyncCall:
    """What the block of ``AsyncLimiter.call`` records of its request (see there)."""

    def __init__(self, integration: str, tenant: str | None, decision: Decision) -> None:
        self.integration = integration
        self.tenant = tenant
        self.decision = decision
        self.outcome: Outcome | None = None  # once reported: what the answer was read as
        self._answer: tuple[int | None, Any, Any] | None = None

    def answered(
        self,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes | str | Mapping[str, object] | None = None,
    ) -> None:
        """Record the upstream's answer: reported on the way out (a 429 or a quota read
        from it slows the fleet, a success speeds it up)."""
        self._answer = (status, headers, body)

    def failed(self) -> None:
        """Record that no answer came (a timeout, a refused connection) or a 5xx came: a
        failure, which the integration's breaker counts."""
        self._answer = (None, (), None)


@asynccontextmanager
async def _call(
    limiter: AsyncLimiter,
    integration: str,
    tenant: str | None,
    cost: Cost,
    timeout: float | None,
) -> AsyncIterator[AsyncCall]:
    decision = await limiter._slot(integration, tenant, cost, timeout)
    call = AsyncCall(integration, tenant, decision)
    try:
        if decision.wait > 0:
            await limiter._sleep(decision.wait)
        yield call
    except BaseException:  # cancelled while it slept or ran, or the block's own error
        if decision.lease:
            await asyncio.shield(limiter.release(integration, tenant, decision.lease))
        raise
    status, headers, body = call._answer or (200, (), None)
    call.outcome = await limiter.report_response(
        integration,
        tenant,
        status,
        headers,
        body,
        decision=decision,
        estimated=limiter.costs(integration, cost),
    )

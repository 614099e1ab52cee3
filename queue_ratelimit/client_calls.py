"""What a rate-limited HTTP client asks before a request and reports after it, whatever the
client library: the part the ``requests`` adapter and the ``httpx`` transports share
(:mod:`queue_ratelimit.http`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

from queue_ratelimit import context
from queue_ratelimit.async_limiter import AsyncLimiter
from queue_ratelimit.client_keys import BY_TOKEN, RequestKeys, Tenant
from queue_ratelimit.client_requests import Request, small, token_tenant
from queue_ratelimit.client_retries import NO_RETRIES, Retries
from queue_ratelimit.errors import (
    BACKEND_UNAVAILABLE,
    CONTENTION,
    CONTENTION_WAIT,
    BackendUnavailable,
    QuotaSpent,
    RateLimited,
)
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.outcome import Outcome
from queue_ratelimit.plans import Cost
from queue_ratelimit.policy.state import BACKOFF, Decision
from queue_ratelimit.runner import CONFIRM_AFTER

__all__ = [
    "BY_TOKEN",
    "NO_RETRIES",
    "ClientCalls",
    "Request",
    "Retries",
    "Tenant",
    "small",
    "token_tenant",
]

log = logging.getLogger("queue_ratelimit.http")


class _Answer(Protocol):
    """What the report reads of a ``requests`` or ``httpx`` response."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Any: ...


class _Headed(Protocol):
    """An ``httpx`` or ``aiohttp`` response, as the async report reads it (its status is
    read by a function: the two name it differently)."""

    @property
    def headers(self) -> Any: ...


R = TypeVar("R", bound=_Answer)
A = TypeVar("A", bound=_Headed)
T = TypeVar("T")


@dataclass(frozen=True)
class _Call:
    integration: str
    tenant: str | None
    cost: Cost
    decision: Decision


class ClientCalls(RequestKeys):
    """The framework-neutral part: what to ask before a request and report after it."""

    def __init__(
        self,
        limiter: Limiter | AsyncLimiter,
        integration: str,
        tenant: Tenant,
        max_wait: float | None,
        raise_on_backoff: bool,
        estimate: Callable[[Any], Cost] | None,
        usage: Callable[[Any], Mapping[str, float] | None] | None,
        retries: Retries = NO_RETRIES,
    ) -> None:
        self._alimiter: AsyncLimiter | None = None
        if isinstance(limiter, AsyncLimiter):  # an async client's: it runs on an event loop
            self._alimiter, limiter = limiter, limiter.sync
        super().__init__(limiter, integration, tenant, estimate)
        self.max_wait = max_wait
        self.raise_on_backoff = raise_on_backoff
        self.usage = usage
        self.retries = retries
        self._releasing: set[asyncio.Task[bool]] = set()

    @property
    def alimiter(self) -> AsyncLimiter:
        """The async limiter the coroutines use (one sharing ``limiter``, when a ``Limiter``
        was given)."""
        if self._alimiter is None:
            self._alimiter = AsyncLimiter.sharing(self.limiter)
        return self._alimiter

    def before(self, request: Request) -> _Call:
        """Acquire; raise ``RateLimited`` when the slot is further than ``max_wait``."""
        integration, tenant, cost, slot = self.asked(request)
        if slot is not None:  # what the task paid is this call's estimate
            return self._granted(integration, tenant, slot.cost, slot.decision)
        try:
            decision = self.limiter.acquire(
                integration, tenant, cost, max_wait=self.max_wait, reserve=False
            )
        except BackendUnavailable as exc:
            self._unavailable(exc, integration, tenant)
        return self._granted(integration, tenant, cost, decision)

    async def abefore(self, request: Request) -> _Call:
        """``before`` on the async limiter."""
        integration, tenant, cost, slot = self.asked(request)
        if slot is not None:
            return self._granted(integration, tenant, slot.cost, slot.decision)
        try:
            decision = await self.alimiter.acquire(
                integration, tenant, cost, max_wait=self.max_wait, reserve=False
            )
        except BackendUnavailable as exc:
            self._unavailable(exc, integration, tenant)
        return self._granted(integration, tenant, cost, decision)

    @staticmethod
    def _unavailable(exc: BackendUnavailable, integration: str, tenant: str | None) -> NoReturn:
        if context.on_rate_limited.get() is None:
            raise exc
        # inside a task: requeue it like a throttled call, to retry once Redis answers
        context.raise_rate_limited(
            RateLimited(exc.retry_after, integration, tenant, BACKEND_UNAVAILABLE)
        )
        raise exc  # (raise_rate_limited raises)

    @staticmethod
    def _granted(integration: str, tenant: str | None, cost: Cost, decision: Decision) -> _Call:
        if not decision.granted:
            context.raise_rate_limited(RateLimited(decision.wait, integration, tenant))
        return _Call(integration, tenant, cost, decision)

    def ready(self, request: Request) -> _Call:
        """Acquire and sleep the wait; a wait of ``CONFIRM_AFTER`` or more is confirmed
        once slept (``Limiter.holds``): a slot that a backoff met meanwhile voided is asked
        for once more, rather than sent into the cooldown."""
        for again in (False, True):
            call = self.before(request)
            wait = call.decision.wait
            try:
                if wait > 0:
                    time.sleep(wait)
                if again or wait < CONFIRM_AFTER:
                    return call
                if self.limiter.holds(call.integration, call.tenant, call.decision):
                    return call
            except BaseException:  # interrupted while it slept: its lease goes back
                self.abandon(call)
                raise
            self.abandon(call)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aready(self, request: Request) -> _Call:
        """``ready`` on the async limiter."""
        for again in (False, True):
            call = await self.abefore(request)
            wait = call.decision.wait
            try:
                if wait > 0:
                    await asyncio.sleep(wait)
                if again or wait < CONFIRM_AFTER:
                    return call
                if await self.alimiter.holds(call.integration, call.tenant, call.decision):
                    return call
            except BaseException:  # cancelled while it slept: its lease goes back
                self.abandon_later(call)
                raise
            self.abandon_later(call)
        raise AssertionError("unreachable")  # pragma: no cover

    def exchange(
        self,
        request: Any,
        send: Callable[[], R],
        transport_errors: type[BaseException] | tuple[type[BaseException], ...],
        body_of: Callable[[R], bytes | None],
        close: Callable[[R], object],
        whole: bool = False,
    ) -> R:
        """One blocking attempt, whole: acquire (sleeping a short wait), ``send``, report
        (the clients wrap it in ``Retries.run``).

        ``transport_errors`` are reported as "no answer"; any other exception only gives the
        lease back. ``body_of`` reads the body the report needs (``whole``: the caller reads
        it all anyway, so its size does not matter); the response is closed when the report
        raises (a ``RateLimited``, or a task's requeue carrier).
        """
        call = self.ready(request)
        try:
            response = send()
        except transport_errors:
            self.after(call, None)
            raise
        except BaseException:
            self.abandon(call)
            raise
        status = response.status_code
        wanted = self.wants_body(call, status, response.headers, whole)
        try:
            body = body_of(response) if wanted else None
        except BaseException:  # the body could not be read: nothing to report
            self.abandon(call)
            close(response)
            raise
        try:
            self.after(call, status, response.headers, body, response)
        except BaseException:
            close(response)
            raise
        return response

    async def aexchange(
        self,
        request: Any,
        send: Callable[[], Awaitable[A]],
        transport_errors: type[BaseException] | tuple[type[BaseException], ...],
        status_of: Callable[[A], int],
        body_of: Callable[[A], Awaitable[bytes]],
        close: Callable[[A], Awaitable[object]],
    ) -> A:
        """``exchange`` on an event loop, with the async limiter: no blocking call, waits
        are ``asyncio.sleep``."""
        call = await self.aready(request)
        try:
            response = await send()
        except transport_errors:
            await self.aafter(call, None)
            raise
        except BaseException:  # cancellation included: the lease is given back by a task
            self.abandon_later(call)
            raise
        status = status_of(response)
        wanted = self.wants_body(call, status, response.headers)
        try:
            body = await body_of(response) if wanted else None
        except BaseException:  # unreadable, or cancelled while read: nothing to report
            self.abandon_later(call)
            await asyncio.shield(close(response))
            raise
        try:
            await self.aafter(call, status, response.headers, body, response)
        except BaseException:  # a RateLimited, or a task's requeue carrier
            await close(response)
            raise
        return response

    def abandon(self, call: _Call) -> None:
        """The call ended without an answer to report (the caller's own exception): give
        its concurrency lease back rather than hold it until it expires."""
        if call.decision.lease:
            self.limiter.release(call.integration, call.tenant, call.decision.lease)

    def abandon_later(self, call: _Call) -> None:
        """``abandon`` from a coroutine that is being cancelled (it may not await): the
        lease is given back by a task of its own."""
        if call.decision.lease:
            task = asyncio.get_running_loop().create_task(
                self.alimiter.release(call.integration, call.tenant, call.decision.lease)
            )
            self._releasing.add(task)  # a task nobody holds may be collected unfinished
            task.add_done_callback(self._releasing.discard)

    def wants_body(self, call: _Call, status: int, headers: Any, whole: bool = False) -> bool:
        """Read the body first: a backoff's (for its wording and codes), any usable answer's
        when ``usage`` reads it, and one the dialect reads for a throttle (a GraphQL 200)
        when the caller reads it whole anyway (``whole``) or it says it is small
        (``Content-Length`` under ``MAX_BODY_BYTES``, uncompressed): a large or streamed
        answer is left to the caller, whole."""
        config = self.limiter.config(call.integration)
        dialect = config.dialect
        if status in config.backoff_status_codes or status in dialect.backoff_statuses:
            return True
        if self.usage is not None and status < 500:
            return True
        return status in dialect.body_statuses and (whole or small(headers))

    def _usage(self, call: _Call, status: int | None, response: Any) -> Mapping[str, float] | None:
        """The call's actual cost from a successful answer; None when unknown or unreadable."""
        if self.usage is None or response is None or status is None:
            return None
        if status >= 500 or status in self.limiter.config(call.integration).backoff_status_codes:
            return None
        try:
            return self.usage(response)
        except Exception:  # a usage function must never turn an answer into an error
            log.warning("queue_ratelimit: usage() failed for %s", call.integration, exc_info=True)
            return None

    def after(
        self,
        call: _Call,
        status: int | None,
        headers: Any = (),
        body: bytes | None = None,
        response: Any = None,
    ) -> Outcome:
        """Report the answer (``status=None``: none came); raise ``RateLimited`` on a backoff."""
        args, named = self._answer(call, status, headers, body, response)
        return self._raise_for(call, self.limiter.report_response(*args, **named), status)

    async def aafter(
        self,
        call: _Call,
        status: int | None,
        headers: Any = (),
        body: bytes | None = None,
        response: Any = None,
    ) -> Outcome:
        """``after`` on the async limiter."""
        args, named = self._answer(call, status, headers, body, response)
        outcome = await self.alimiter.report_response(*args, **named)
        return self._raise_for(call, outcome, status)

    def _answer(
        self, call: _Call, status: int | None, headers: Any, body: bytes | None, response: Any
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``report_response``'s arguments for an answer: the call's decision, its
        estimated cost per limit and, when ``usage`` reads it, what it actually cost."""
        named = {
            "decision": call.decision,
            "estimated": self.limiter.costs(call.integration, call.cost),
            "actual": self._usage(call, status, response),
        }
        return (call.integration, call.tenant, status, headers, body), named

    def _raise_for(self, call: _Call, outcome: Outcome, status: int | None) -> Outcome:
        """Raise ``RateLimited`` on a backoff or a contention (reason ``contention``: try
        again after its stated wait, else ``CONTENTION_WAIT``), ``QuotaSpent`` on a refusal
        (unless the client returns answers as they are: ``raise_on_backoff=False``)."""
        if not self.raise_on_backoff:
            return outcome
        info = outcome.info
        if info.refused:
            raise QuotaSpent(call.integration, info.refused, status or 0)
        if info.contended:
            wait = CONTENTION_WAIT if info.retry_after is None else info.retry_after
            context.raise_rate_limited(RateLimited(wait, call.integration, call.tenant, CONTENTION))
        if outcome.kind == BACKOFF:
            context.raise_rate_limited(
                RateLimited(outcome.retry_after, call.integration, call.tenant)
            )
        return outcome

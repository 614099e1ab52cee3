"""Rate-limited HTTP: a ``requests`` adapter and ``httpx`` transports (sync and async).

Each request acquires from the limiter first (sleeping a short wait, at most ``max_wait``;
beyond it ``RateLimited`` is raised before anything is sent; inside a rate-limited task the
first call uses the slot the task acquired before it started), and each answer is reported:
its quotas feed the limiter, a backoff slows the fleet down and raises ``RateLimited``
carrying ``retry_after`` (or is returned, with ``raise_on_backoff=False``; inside a task the
integration's requeue hook takes it instead), a 5xx or a transport error counts toward the
breaker.

    session = requests.Session()
    session.mount("https://api.notion.com/", RateLimitedAdapter(limiter, "notion"))

    client = httpx.Client(transport=RateLimitedTransport(limiter, "notion"))
    client = httpx.AsyncClient(transport=AsyncRateLimitedTransport(limiter, "notion"))

The tenant is a fixed string, a function of the request, or ``BY_TOKEN``: a digest of the
``Authorization`` header, so each API token gets its own limit while the token itself never
reaches Redis, signals, logs or exceptions. Without one, a call made inside a rate-limited
task uses the task's tenant. Timeouts: the adapter applies
``DEFAULT_TIMEOUT`` (5 s to connect, 30 s to read) when a request sets none; httpx clients
keep their own (httpx's default is 5 s).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import anyio
import httpx
import requests
from requests.adapters import HTTPAdapter

from queue_ratelimit import context
from queue_ratelimit.errors import BACKEND_UNAVAILABLE, BackendUnavailable, RateLimited
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.outcome import Outcome
from queue_ratelimit.plans import Cost
from queue_ratelimit.policy.state import BACKOFF, Decision

__all__ = [
    "BY_TOKEN",
    "DEFAULT_TIMEOUT",
    "AsyncRateLimitedTransport",
    "RateLimitedAdapter",
    "RateLimitedTransport",
    "token_tenant",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = (5.0, 30.0)
"""(connect, read) seconds used by ``RateLimitedAdapter`` when a request sets no timeout."""

BY_TOKEN: Final = "queue_ratelimit:by-token"
"""Pass as ``tenant`` to key each request's limit by a digest of its Authorization header."""

Request = requests.PreparedRequest | httpx.Request
Tenant = str | Callable[[Any], str | None] | None


class _Answer(Protocol):
    """What the report reads of a ``requests`` or ``httpx`` response."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Any: ...


R = TypeVar("R", bound=_Answer)


def token_tenant(authorization: str | None) -> str | None:
    """A stable, non-reversible tenant name for an Authorization header value."""
    if not authorization:
        return None
    return "tok-" + hashlib.sha256(authorization.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Call:
    tenant: str | None
    cost: Cost
    decision: Decision


class _ClientCalls:
    """The framework-neutral part: what to ask before a request and report after it."""

    def __init__(
        self,
        limiter: Limiter,
        integration: str,
        tenant: Tenant,
        max_wait: float | None,
        raise_on_backoff: bool,
        estimate: Callable[[Any], Cost] | None,
        usage: Callable[[Any], Mapping[str, float] | None] | None,
    ) -> None:
        # an unknown integration fails here, at construction
        self.backoff_codes = limiter.config(integration).backoff_status_codes
        self.limiter = limiter
        self.integration = integration
        self.tenant = tenant
        self.max_wait = max_wait
        self.raise_on_backoff = raise_on_backoff
        self.estimate = estimate
        self.usage = usage

    def tenant_of(self, request: Request) -> str | None:
        if self.tenant == BY_TOKEN:
            return token_tenant(request.headers.get("Authorization"))
        if callable(self.tenant):
            return self.tenant(request)
        if self.tenant is None:
            return context.task_tenant(self.integration)
        return self.tenant

    def before(self, request: Request) -> _Call:
        """Acquire; raise ``RateLimited`` when the slot is further than ``max_wait``."""
        tenant = self.tenant_of(request)
        cost = self.estimate(request) if self.estimate else 1.0
        slot = context.take_prepaid(self.integration, tenant)
        if slot is None:
            try:
                decision = self.limiter.acquire(
                    self.integration, tenant, cost, max_wait=self.max_wait, reserve=False
                )
            except BackendUnavailable as exc:
                if context.on_rate_limited.get() is None:
                    raise
                # inside a task: requeue it like a throttled call, to retry once Redis answers
                context.raise_rate_limited(
                    RateLimited(exc.retry_after, self.integration, tenant, BACKEND_UNAVAILABLE)
                )
        else:  # what the task paid is this call's estimate
            decision, cost = slot.decision, slot.cost
        if not decision.granted:
            context.raise_rate_limited(RateLimited(decision.wait, self.integration, tenant))
        return _Call(tenant, cost, decision)

    def exchange(
        self,
        request: Any,
        send: Callable[[], R],
        transport_errors: type[BaseException] | tuple[type[BaseException], ...],
        body_of: Callable[[R], bytes | None],
        close: Callable[[R], object],
    ) -> R:
        """One blocking call, whole: acquire (sleeping a short wait), ``send``, report.

        ``transport_errors`` are reported as "no answer"; any other exception only gives the
        lease back. ``body_of`` reads the body the report needs; the response is closed when
        the report raises (a ``RateLimited``, or a task's requeue carrier).
        """
        call = self.before(request)
        if call.decision.wait > 0:
            time.sleep(call.decision.wait)
        try:
            response = send()
        except transport_errors:
            self.after(call, None)
            raise
        except BaseException:
            self.abandon(call)
            raise
        status = response.status_code
        body = body_of(response) if self.wants_body(status) else None
        try:
            self.after(call, status, response.headers, body, response)
        except BaseException:
            close(response)
            raise
        return response

    def abandon(self, call: _Call) -> None:
        """The call ended without an answer to report (the caller's own exception): give
        its concurrency lease back rather than hold it until it expires."""
        if call.decision.lease:
            self.limiter.release(self.integration, call.tenant, call.decision.lease)

    def wants_body(self, status: int) -> bool:
        """Read the body first: a backoff's (for its wording), or any usable answer's when
        ``usage`` reads it."""
        return status in self.backoff_codes or (self.usage is not None and status < 500)

    def _usage(self, status: int | None, response: Any) -> Mapping[str, float] | None:
        """The call's actual cost from a successful answer; None when unknown or unreadable."""
        if self.usage is None or response is None or status is None:
            return None
        if status >= 500 or status in self.backoff_codes:
            return None
        try:
            return self.usage(response)
        except Exception:  # a usage function must never turn an answer into an error
            log.warning("queue_ratelimit: usage() failed for %s", self.integration, exc_info=True)
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
        actual = self._usage(status, response)
        outcome = self.limiter.report_response(
            self.integration,
            call.tenant,
            status,
            headers,
            body,
            decision=call.decision,
            estimated=self.limiter.costs(self.integration, call.cost) if actual else None,
            actual=actual,
        )
        if outcome.kind == BACKOFF and self.raise_on_backoff:
            context.raise_rate_limited(
                RateLimited(outcome.retry_after, self.integration, call.tenant)
            )
        return outcome


class RateLimitedAdapter(HTTPAdapter):
    """A ``requests`` transport adapter that rate-limits every request sent through it.

    Args:
        limiter: the shared limiter.
        integration: the integration whose limits apply.
        tenant: a tenant name, a function of the ``PreparedRequest``, or ``BY_TOKEN``.
        max_wait: the longest wait slept before sending (default: the integration's).
        raise_on_backoff: raise ``RateLimited`` on a backoff answer (else return it).
        estimate: a function of the request giving its cost (``{"tokens": 1200}``).
        usage: a function of the response giving its actual cost, to correct the estimate.
        **kwargs: passed to ``HTTPAdapter`` (pool sizes, ``max_retries``).
    """

    def __init__(
        self,
        limiter: Limiter,
        integration: str,
        *,
        tenant: Tenant = None,
        max_wait: float | None = None,
        raise_on_backoff: bool = True,
        estimate: Callable[[Any], Cost] | None = None,
        usage: Callable[[Any], Mapping[str, float] | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._gate = _ClientCalls(
            limiter, integration, tenant, max_wait, raise_on_backoff, estimate, usage
        )

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Acquire, send, report; see the class docstring."""
        parent = super().send
        return self._gate.exchange(
            request,
            lambda: parent(request, stream=stream, timeout=timeout or DEFAULT_TIMEOUT, **kwargs),
            requests.RequestException,
            lambda response: None if stream else response.content,
            requests.Response.close,
        )


class RateLimitedTransport(httpx.BaseTransport):
    """An ``httpx`` transport that rate-limits every request; wraps another transport.

    Args: as ``RateLimitedAdapter``, plus ``transport`` (default ``httpx.HTTPTransport()``).
    """

    def __init__(
        self,
        limiter: Limiter,
        integration: str,
        *,
        transport: httpx.BaseTransport | None = None,
        tenant: Tenant = None,
        max_wait: float | None = None,
        raise_on_backoff: bool = True,
        estimate: Callable[[Any], Cost] | None = None,
        usage: Callable[[Any], Mapping[str, float] | None] | None = None,
    ) -> None:
        self._transport = transport or httpx.HTTPTransport()
        self._gate = _ClientCalls(
            limiter, integration, tenant, max_wait, raise_on_backoff, estimate, usage
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Acquire, send, report; see the module docstring."""
        return self._gate.exchange(
            request,
            lambda: self._transport.handle_request(request),
            httpx.TransportError,
            httpx.Response.read,
            httpx.Response.close,
        )

    def close(self) -> None:
        """Close the wrapped transport."""
        self._transport.close()


class AsyncRateLimitedTransport(httpx.AsyncBaseTransport):
    """The async twin of ``RateLimitedTransport``: limiter calls run in a worker thread
    (they do blocking Redis I/O) and waits are ``anyio.sleep``, so the event loop never
    blocks. Args: as ``RateLimitedTransport`` with an ``httpx.AsyncBaseTransport``."""

    def __init__(
        self,
        limiter: Limiter,
        integration: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        tenant: Tenant = None,
        max_wait: float | None = None,
        raise_on_backoff: bool = True,
        estimate: Callable[[Any], Cost] | None = None,
        usage: Callable[[Any], Mapping[str, float] | None] | None = None,
    ) -> None:
        self._transport = transport or httpx.AsyncHTTPTransport()
        self._gate = _ClientCalls(
            limiter, integration, tenant, max_wait, raise_on_backoff, estimate, usage
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Acquire, send, report; see the module docstring."""
        call = await anyio.to_thread.run_sync(self._gate.before, request)
        if call.decision.wait > 0:
            await anyio.sleep(call.decision.wait)
        try:
            response = await self._transport.handle_async_request(request)
        except httpx.TransportError:
            await anyio.to_thread.run_sync(self._gate.after, call, None)
            raise
        except BaseException:  # cancellation included: no await here, it could be cancelled too
            self._gate.abandon(call)
            raise
        body = await response.aread() if self._gate.wants_body(response.status_code) else None
        try:
            await anyio.to_thread.run_sync(
                self._gate.after, call, response.status_code, response.headers, body, response
            )
        except BaseException:  # a RateLimited, or a task's requeue carrier
            await response.aclose()
            raise
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._transport.aclose()

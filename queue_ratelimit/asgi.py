"""Limit your own API: an ASGI middleware and a FastAPI dependency on the shared limiter.

::

    rules = [
        Rule("per-client", (Rate(10), Rate(10_000, per=86_400)), key=by_client_ip),
        Rule("global", (Rate(500),)),
    ]
    app.add_middleware(InboundRateLimitMiddleware, rules=rules, backend="redis://localhost/0")

    # or per route, in FastAPI
    limits = InboundLimiter([Rule("search", (Rate(2),), key=by_header("X-API-Key"))])
    @app.get("/search", dependencies=[Depends(limits.dependency("search"))])

Each request is checked against every rule that applies to it, in order (put per-key
rules before global ones: a request a key's rule refuses spends nothing of the global
one). A refused request gets 429 with ``Retry-After`` and the IETF ``RateLimit`` and
``RateLimit-Policy`` fields (``queue_ratelimit.inbound``); a granted one carries the fields
of every rule it passed (``fields=False``: none). The limiter is an ``AsyncLimiter``:
on Redis its calls are awaited (``redis.asyncio``), in memory they are direct. Needs
Starlette (the ``asgi`` extra; FastAPI brings it).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from queue_ratelimit.async_limiter import AsyncLimiter
from queue_ratelimit.backends import Backend, open_backend
from queue_ratelimit.errors import ConfigError
from queue_ratelimit.inbound import Rule, fields_for_grant, fields_for_refusal, key_name
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.policy.header_values import policy_name
from queue_ratelimit.policy.state import Decision

__all__ = ["InboundLimiter", "InboundRateLimitMiddleware", "Verdict"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Verdict:
    """What the rules said of one request: refused (by ``rule``, for ``wait`` seconds) or
    let through, with the fields to add to its answer and the keys to report to."""

    refused: Rule | None
    wait: float
    fields: list[tuple[str, str]]
    passed: tuple[tuple[Rule, str | None], ...] = ()

    def refusal(self) -> Response:
        """The 429 answer of a refused request."""
        return JSONResponse(
            {"error": "rate_limited", "retry_after": int(dict(self.fields)["Retry-After"])},
            status_code=429,
            headers=dict(self.fields),
        )


class InboundLimiter:
    """Rules and the limiter that decides them, shared by the middleware and dependencies.

    Args:
        rules: the ``Rule``\\ s, checked in order.
        backend: a ``Backend``, or a store's URL (``redis://...``, ``postgresql://...``,
            ``sqlite:///path``, ``memory://``); a new
            ``MemoryBackend`` (this process only) when omitted.
        prefix: the Redis key prefix when ``backend`` is a URL (apart from your workers').
        fields: add the ``RateLimit`` fields to granted answers too.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        backend: Backend | str | None = None,
        prefix: str = "qrl-in",
        fields: bool = True,
    ) -> None:
        rules = list(rules)
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise ConfigError(None, "rules", names, "each rule needs a name of its own")
        policies = [policy_name(f'"{n}"') for rule in rules for n in rule.policy_names()]
        if len(set(policies)) != len(policies):  # ("a" with two rates has "a-2": so may "a-2")
            raise ConfigError(None, "rules", names, "two rules' policies share a name")
        if isinstance(backend, str):
            backend = open_backend(backend, prefix=prefix, field="backend")
        self.rules = rules
        self.by_name = {rule.name: rule for rule in rules}
        configs = {rule.name: rule.config() for rule in rules}
        self.limiter = AsyncLimiter.sharing(Limiter(backend, configs))
        self.fields = fields

    async def check(self, request: Request, names: Sequence[str] | None = None) -> Verdict:
        """Acquire for ``request`` from every rule that applies (of ``names`` only, when
        given), in order; stop at the first refusal."""
        rules = self.rules if names is None else [self.by_name[name] for name in names]
        fields: list[tuple[str, str]] = []
        passed: list[tuple[Rule, str | None]] = []
        for rule in rules:
            if names is None and not rule.applies(request.method, request.url.path):
                continue
            if rule.exempt is not None and rule.exempt(request):
                continue
            tenant: str | None = None
            if rule.key is not None:
                key = rule.key(request)
                if key is None:
                    continue  # the key function exempts it
                tenant = key_name(str(key))
            decision = await self._acquire(rule, tenant)
            if not decision.granted:
                return Verdict(rule, decision.wait, fields_for_refusal(rule, decision.wait))
            passed.append((rule, tenant))
            if self.fields and decision.tokens is not None:
                fields += fields_for_grant(rule, decision.tokens, decision.now)
        return Verdict(None, 0.0, _merged(fields), tuple(passed))

    async def _acquire(self, rule: Rule, tenant: str | None) -> Decision:
        return await self.limiter.acquire(
            rule.name, tenant, rule.costs(), max_wait=0.0, reserve=False, tokens=True
        )

    async def answered(self, verdict: Verdict, status: int, seconds: float) -> None:
        """Report the app's answer to the adaptive rules the request passed."""
        for rule, tenant in verdict.passed:
            adaptive = rule.adaptive
            if adaptive is None:
                continue
            if adaptive.is_backoff(status, seconds):
                await self.limiter.on_backoff(rule.name, tenant)
            else:
                await self.limiter.on_success(rule.name, tenant)

    def dependency(self, *names: str) -> Callable[[Request, Response], Awaitable[None]]:
        """A FastAPI dependency limiting the route it guards by the rules named (all of
        them when none is named; their ``paths`` and ``methods`` are not consulted): a
        refusal raises ``HTTPException(429)`` with the fields, a grant sets them on the
        route's response."""
        for name in names:
            if name not in self.by_name:
                raise ConfigError(
                    None, "rules", name, f"no rule of that name: {list(self.by_name)}"
                )
        chosen = list(names) or list(self.by_name)

        async def limit(request: Request, response: Response) -> None:
            verdict = await self.check(request, chosen)
            if verdict.refused is not None:
                raise HTTPException(429, "rate limited", headers=dict(verdict.fields))
            for name, value in verdict.fields:
                response.headers[name] = value

        return limit

    async def aclose(self) -> None:
        """Close the running loop's Redis client."""
        await self.limiter.aclose()


def _merged(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One ``RateLimit-Policy`` and one ``RateLimit`` field, listing every rule's members."""
    merged: dict[str, list[str]] = {}
    for name, value in fields:
        merged.setdefault(name, []).append(value)
    return [(name, ", ".join(values)) for name, values in merged.items()]


class InboundRateLimitMiddleware:
    """ASGI middleware limiting every HTTP request by the rules (see the module).

    Args:
        app: the ASGI app.
        rules, backend, prefix, fields: as ``InboundLimiter``; or ``limits``, an
            ``InboundLimiter`` shared with dependencies.
    """

    def __init__(
        self,
        app: ASGIApp,
        rules: Sequence[Rule] = (),
        *,
        limits: InboundLimiter | None = None,
        backend: Backend | str | None = None,
        prefix: str = "qrl-in",
        fields: bool = True,
    ) -> None:
        self.app = app
        self.limits = limits or InboundLimiter(rules, backend=backend, prefix=prefix, fields=fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        verdict = await self.limits.check(Request(scope))
        if verdict.refused is not None:
            await verdict.refusal()(scope, receive, send)
            return
        started, status = time.monotonic(), 500

        async def send_with_fields(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if verdict.fields:
                    headers = MutableHeaders(scope=message)
                    for name, value in verdict.fields:
                        headers.append(name, value)
            await send(message)

        try:
            await self.app(scope, receive, send_with_fields)
        finally:
            if any(rule.adaptive for rule, _ in verdict.passed):
                await self.limits.answered(verdict, status, time.monotonic() - started)

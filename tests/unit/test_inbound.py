"""Inbound rules, keys and fields (pure), and the middleware in process on the memory store
(the real server and Redis: ``tests/integration/test_inbound.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from queue_ratelimit import ConfigError, parse_rate_limit
from queue_ratelimit.asgi import InboundLimiter, InboundRateLimitMiddleware
from queue_ratelimit.inbound import (
    Adaptive,
    Rate,
    Rule,
    by_client_ip,
    fields_for_grant,
    fields_for_refusal,
    key_name,
)

TWO_RATES = Rule("a", (Rate(1), Rate(5, per=60)))  # its policies: "a" and "a-2"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Rate(0), "rate.limit"),
        (lambda: Rate(10, per=-1), "rate.per"),
        (lambda: Rate(10, burst=0.5), "rate.burst"),
        (lambda: Rate(float("inf")), "rate.limit"),
        (lambda: Rule("Bad Name", (Rate(1),)), "rule.name"),
        (lambda: Rule("r", ()), "rates"),
        (lambda: Rule("r", (Rate(1),), paths=("api",)), "paths"),
        (lambda: Adaptive(min_share=0), "adaptive.min_share"),
        (lambda: Adaptive(statuses="500"), "adaptive.statuses"),  # type: ignore[arg-type]
        (lambda: Rate(0.5), "rate.limit"),  # q and w are whole: Rate(1, per=2)
        (lambda: Rule("r", (Rate(1),), methods="GET"), "methods"),  # type: ignore[arg-type]
        (lambda: Rule("r", (Rate(5, per=86_400, aligned=True),)), "rates"),  # not the first
        (lambda: Rule("r", (Rate(1), Rate(9, per=60)), adaptive=Adaptive()), "adaptive"),
        (
            lambda: InboundLimiter(
                [Rule("a", (Rate(1), Rate(5, per=60))), Rule("a-2", (Rate(1),))]
            ),
            "rules",  # both would name a policy "a-2"
        ),
        (lambda: InboundLimiter([Rule("a", (Rate(1),)), Rule("a", (Rate(2),))]), "rules"),
    ],
)
def test_invalid_rules_fail_at_startup_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make()


def test_fields_are_what_our_own_parser_reads() -> None:
    rule = Rule("api", (Rate(10, burst=20), Rate(1000, per=86_400)))
    fields = dict(fields_for_grant(rule, (12.4, 400.0)))
    assert fields["RateLimit-Policy"] == '"api";q=10;w=1, "api-2";q=1000;w=86400'
    info = parse_rate_limit(200, fields)
    assert info.quotas["api"].remaining == 12 and info.quotas["api"].reset_after == 1.0
    assert info.quotas["api_2"].remaining == 400 and info.quotas["api_2"].limit == 1000
    assert info.limit == 1000  # the day's is the tighter share (0.4 against 0.6 of its q)
    refusal = dict(fields_for_refusal(rule, 0.21))
    back = parse_rate_limit(429, refusal)
    assert (back.backoff, back.retry_after) == (True, 1.0)  # whole seconds, rounded up
    assert back.quotas["api"].remaining == 0


def test_keys_are_kept_when_plain_and_digested_otherwise() -> None:
    assert key_name("203.0.113.7") == "203.0.113.7"
    hostile = ["x" * 65, "ключ", "a b", "\ud800", "a\x00b", "x" * 10_000, "x" * 10_001]
    names = [key_name(key) for key in hostile]
    assert all(name.startswith("k-") and name.isascii() and len(name) == 34 for name in names)
    assert len(set(names)) == len(hostile)  # distinct keys stay distinct


def test_ipv6_clients_are_keyed_by_their_64() -> None:
    class Client:
        def __init__(self, host: str) -> None:
            self.host = host

    class Asked:
        def __init__(self, host: str) -> None:
            self.client = Client(host)

    assert by_client_ip(Asked("2001:db8::1")) == by_client_ip(Asked("2001:db8::ffff:2"))
    assert by_client_ip(Asked("192.0.2.1")) == "192.0.2.1"


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _fragile(request: Request) -> PlainTextResponse:
    return PlainTextResponse("down", status_code=503)


def _get_all(app: Any, path: str, count: int, headers: dict[str, str] | None = None) -> list[int]:
    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.get(path, headers=headers)).status_code for _ in range(count)]

    return asyncio.run(main())


def test_rules_apply_by_path_and_method_and_a_key_function_can_exempt() -> None:
    rules = [
        Rule("writes", (Rate(1, per=60),), methods=("POST",)),
        Rule("api", (Rate(2, per=60),), key=by_client_ip, paths=("/api/",)),
        Rule("vip", (Rate(1, per=60),), key=lambda r: None if r.headers.get("x-vip") else "all"),
    ]
    routes = [Route("/api/x", _ok), Route("/other", _ok)]
    app = InboundRateLimitMiddleware(Starlette(routes=routes), rules)
    assert _get_all(app, "/api/x", 3, {"x-vip": "1"}) == [200, 200, 429]  # api: 2 a minute
    assert _get_all(app, "/other", 3, {"x-vip": "1"}) == [200] * 3  # no rule applies
    assert _get_all(app, "/other", 2) == [200, 429]  # vip's rule: 1 a minute for non-VIPs


def test_an_adaptive_rule_slows_down_when_the_app_fails() -> None:
    rule = Rule("fragile", (Rate(50, burst=100),), adaptive=Adaptive(min_share=0.1))
    limits = InboundLimiter([rule])
    app = InboundRateLimitMiddleware(Starlette(routes=[Route("/", _fragile)]), limits=limits)
    statuses = _get_all(app, "/", 5)
    assert statuses[0] == 503 and set(statuses) <= {503, 429}  # a pause after each failure
    after = limits.limiter.sync.snapshot("fragile")
    assert 5.0 <= after.limit().rate < 50.0  # decreased, not below its floor
    assert after.counts.get("backoffs", 0) >= 1


def test_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    app = InboundRateLimitMiddleware(inner, [Rule("all", (Rate(1, per=60),))])
    for _ in range(3):
        asyncio.run(app({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"] * 3


def test_an_aligned_day_grants_exactly_its_limit_and_says_when_the_day_ends() -> None:
    day = Rule("daily", (Rate(100), Rate(3, per=86_400, aligned=True)), key=by_client_ip)
    app = InboundRateLimitMiddleware(Starlette(routes=[Route("/", _ok)]), [day])

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.get("/") for _ in range(5)]

    answers = asyncio.run(main())
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429, 429]
    info = parse_rate_limit(200, answers[2].headers)
    day_left = info.quotas["daily_2"]
    assert day_left.remaining == 0 and day_left.limit == 3
    assert day_left.reset_after is not None and 0 < day_left.reset_after <= 86_400  # midnight
    refused = parse_rate_limit(429, answers[3].headers)
    assert refused.retry_after is not None and refused.retry_after >= day_left.reset_after - 1

"""The trivial app ``inbound.py`` serves twice: bare, and behind the inbound middleware
with ``QRL_BENCH_RULES`` rules on Redis (1: per client; 2: and a global one), so large that
every request is granted: what is timed is the middleware's own cost."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from queue_ratelimit.asgi import InboundRateLimitMiddleware
from queue_ratelimit.inbound import Rate, Rule, by_header


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/", hello)])
RULES = int(os.environ.get("QRL_BENCH_RULES", "0"))
if RULES:
    HUGE = 1e6
    rules = [
        Rule("bench-client", (Rate(HUGE, burst=HUGE),), key=by_header("X-API-Key")),
        Rule("bench-global", (Rate(HUGE, burst=HUGE),)),
    ][:RULES]
    store = os.environ.get("QRL_BENCH_STORE", "redis://127.0.0.1:6379/0")
    prefix = os.environ.get("QRL_BENCH_PREFIX", "qrl-bench-in")
    app = InboundRateLimitMiddleware(app, rules, backend=store, prefix=prefix)  # type: ignore[assignment]

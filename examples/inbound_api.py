"""Your own API, limited with the same limiter: a FastAPI app behind the inbound middleware.

Each client (its ``X-API-Key``, by digest; else its address) may make 10 requests a second
and 5,000 a day; all clients together 200 a second; ``/health`` is never limited; ``/search``
has a tighter limit of its own, as a route dependency. Refused requests get 429 with
``Retry-After`` and the IETF ``RateLimit`` fields; granted ones carry the fields too.

    pip install "queue_ratelimit[asgi]" fastapi uvicorn
    uvicorn examples.inbound_api:app                      # one process, limits in memory
    QRL_INBOUND_STORE=redis://localhost:6379/0 uvicorn examples.inbound_api:app --workers 4

The store is shared by every worker process (and every host) when it is Redis.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import Depends, FastAPI, Request

from queue_ratelimit.asgi import InboundLimiter, InboundRateLimitMiddleware
from queue_ratelimit.inbound import Rate, Rule, by_client_ip, by_header

STORE = os.environ.get("QRL_INBOUND_STORE", "memory://")
PREFIX = os.environ.get("QRL_INBOUND_PREFIX", "qrl-in")
api_key = by_header("X-API-Key")


def client(request: Request) -> str | None:
    """The API key's digest, else the client's address."""
    return api_key(request) or by_client_ip(request)


def health_check(request: Request) -> bool:
    return request.url.path == "/health"


limits = InboundLimiter(
    [
        Rule(
            "per-client",
            (Rate(10), Rate(5_000, per=86_400, aligned=True)),
            key=client,
            exempt=health_check,
        ),
        Rule("global", (Rate(200),), exempt=health_check),
    ],
    backend=STORE,
    prefix=PREFIX,
)
search_limits = InboundLimiter(
    [Rule("search", (Rate(2),), key=client)], backend=STORE, prefix=PREFIX
)

app = FastAPI(title="inbound limits example")
app.add_middleware(InboundRateLimitMiddleware, limits=limits)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def item(item_id: str) -> dict[str, Any]:
    return {"id": item_id, "served_at": time.time()}


@app.get("/search", dependencies=[Depends(search_limits.dependency())])
async def search(q: str = "") -> dict[str, Any]:
    return {"query": q, "results": []}

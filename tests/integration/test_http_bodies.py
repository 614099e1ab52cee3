"""The HTTP clients read a body a dialect needs without taking it from the caller.

Against the testing upstream's ``graphql-cost`` dialect (a throttle stated in a 200's body):
the client reads the body to find the throttle, and the caller, streaming or not, still gets
every byte of it.
"""

from __future__ import annotations

import json
import uuid

import httpx
import requests

from queue_ratelimit import BUILTIN_INTEGRATIONS, IntegrationConfig, Limiter
from queue_ratelimit.http import RateLimitedAdapter, RateLimitedTransport
from queue_ratelimit.testing import HiddenLimitUpstream

CONFIG = IntegrationConfig(
    name="graphql",
    rate_limit_per_sec=50.0,
    burst_size=10.0,
    max_rate=100.0,
    dialect=BUILTIN_INTEGRATIONS["shopify-graphql"].dialect,
)


def _limiter() -> Limiter:
    return Limiter(configs={"graphql": CONFIG})


def test_requests_streaming_keeps_the_body_the_dialect_read() -> None:
    limiter = _limiter()
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, "graphql", raise_on_backoff=False))
    with HiddenLimitUpstream(10, 1.0, headers="graphql-cost") as upstream:
        url = f"{upstream.url}/shop/{uuid.uuid4().hex}?cost=50"  # more than the 10 points left
        with session.get(url, stream=True, timeout=5) as answer:
            body = b"".join(answer.iter_content(chunk_size=7))
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert limiter.snapshot("graphql").cooldown_left > 0  # the throttle in the body was read


def test_httpx_streaming_keeps_the_body_the_dialect_read() -> None:
    limiter = _limiter()
    transport = RateLimitedTransport(limiter, "graphql", raise_on_backoff=False)
    with (
        httpx.Client(transport=transport) as client,
        HiddenLimitUpstream(10, 1.0, headers="graphql-cost") as upstream,
        client.stream("GET", f"{upstream.url}/shop/{uuid.uuid4().hex}?cost=50") as answer,
    ):
        body = b"".join(answer.iter_bytes())
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert limiter.snapshot("graphql").cooldown_left > 0


def test_a_served_query_read_for_its_cost_stays_whole_for_the_caller() -> None:
    limiter = _limiter()
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, "graphql"))
    with HiddenLimitUpstream(1000, 1.0, headers="graphql-cost") as upstream:
        answer = session.get(f"{upstream.url}/shop/{uuid.uuid4().hex}?cost=30&actual=20")
    cost = answer.json()["extensions"]["cost"]
    assert (cost["requestedQueryCost"], cost["actualQueryCost"]) == (30, 20)
    assert "data" in answer.json()

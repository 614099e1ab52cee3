"""An endpoint group through a real client and upstream: the group's calls are decided, and
paced, under its own integration; the rest under the main one."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from queue_ratelimit import IntegrationConfig, Limiter, RateLimited, signals
from queue_ratelimit.endpoints import Endpoint
from queue_ratelimit.http import RateLimitedTransport
from queue_ratelimit.testing import HiddenLimitUpstream

MAIN = IntegrationConfig(
    name="svc",
    rate_limit_per_sec=50.0,
    burst_size=10.0,
    max_rate=50.0,
    max_wait=5.0,
    endpoints=(Endpoint("svc-search", paths=("/search/",)),),
)
SEARCH = IntegrationConfig(  # one call, then one every 10 s: a second at once is refused
    name="svc-search", rate_limit_per_sec=0.1, burst_size=1.0, max_rate=0.2, max_wait=0.0
)


def test_a_groups_calls_go_under_its_integration_and_its_limit() -> None:
    limiter = Limiter(configs={"svc": MAIN, "svc-search": SEARCH})
    seen: Counter[str] = Counter()

    def count(sender: object, **fields: Any) -> None:
        seen[fields["integration"]] += 1

    signals.acquired.connect(count)
    try:
        with (
            HiddenLimitUpstream(100, 1.0) as upstream,
            httpx.Client(transport=RateLimitedTransport(limiter, "svc")) as client,
        ):
            assert client.get(f"{upstream.url}/search/{uuid.uuid4().hex}").status_code == 200
            with pytest.raises(RateLimited) as refused:  # the group's own limit: spent
                client.get(f"{upstream.url}/search/{uuid.uuid4().hex}")
            statuses = [client.get(f"{upstream.url}/api/{uuid.uuid4().hex}") for _ in range(5)]
    finally:
        signals.acquired.disconnect(count)
    assert refused.value.integration == "svc-search"
    assert [answer.status_code for answer in statuses] == [200] * 5  # the rest: unaffected
    assert seen == {"svc": 5, "svc-search": 1}

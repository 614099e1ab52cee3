"""queue_ratelimit.testing: the upstream users test their tasks against, in each dialect."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from queue_ratelimit import parse_rate_limit
from queue_ratelimit.testing import HiddenLimitUpstream


@pytest.mark.parametrize(
    ("dialect", "quota"),
    [
        ("retry-after", False),
        ("github", True),
        ("x-ratelimit", True),
        ("ietf", True),
        ("none", False),
    ],
)
def test_each_dialect_enforces_the_limit_and_speaks_its_headers(
    rate_limited_upstream: Callable[..., HiddenLimitUpstream], dialect: str, quota: bool
) -> None:
    upstream = rate_limited_upstream(limit=3, window=60.0, headers=dialect)
    answers = [requests.get(f"{upstream.url}/svc/{i}", timeout=5) for i in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    signals = [parse_rate_limit(a.status_code, a.headers) for a in answers]
    assert signals[3].backoff
    if dialect != "none":
        assert signals[3].retry_after is not None and 0 < signals[3].retry_after <= 60
    if quota:
        assert [s.remaining for s in signals[:3]] == [2, 1, 0]
        assert signals[2].limit == 3 and signals[2].reset_after is not None
        assert signals[2].wait is not None  # a 200 with remaining 0 says: wait for the reset
    assert upstream.served_once({"0", "1", "2"})
    assert upstream.count(429) == 1

"""A pytest plugin (loaded automatically once queue_ratelimit is installed): fixtures to test
your own tasks against an upstream that enforces a limit.

``rate_limited_upstream(limit, window=1.0, headers="retry-after")`` starts a
:class:`~queue_ratelimit.testing.HiddenLimitUpstream` for the test and stops it afterwards::

    def test_sync_pages(rate_limited_upstream):
        upstream = rate_limited_upstream(limit=5, headers="github")
        run_my_tasks(base_url=upstream.url + "/notion")
        assert upstream.count(429) == 0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from queue_ratelimit.testing import HiddenLimitUpstream


@pytest.fixture
def rate_limited_upstream() -> Iterator[Callable[..., HiddenLimitUpstream]]:
    """A factory of started upstreams, each stopped when the test ends."""
    started: list[HiddenLimitUpstream] = []

    def start(limit: float, window: float = 1.0, **options: Any) -> HiddenLimitUpstream:
        upstream = HiddenLimitUpstream(limit, window, **options).start()
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.stop()

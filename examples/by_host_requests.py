"""Zero configuration: one ``requests`` session for every API, each host limited on its own.

``RateLimitedAdapter(limiter, BY_HOST)`` mounted on ``https://`` and ``http://`` limits each
request under its host's integration: the built-in one for a known API host
(``api.github.com`` is ``github``), else one made for the host on first use
(``host-<host>[-<port>]``: 1 request/s to start, climbing fast to what the host serves, its
rate-limit headers fed forward). Nothing to configure; a host you know better is configured
like any integration (``[host-api_example_com]`` in ``queue-ratelimit.toml``).

    python examples/by_host_requests.py https://api.github.com/zen https://example.com/

calls each URL once and prints its status and the integration that limited it. Without
arguments it runs 40 calls against two local upstreams on two ports (hidden limits 6/s and
20/s): each port is its own host, limited on its own, and every call is served once.
"""

from __future__ import annotations

import sys
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from queue_ratelimit import Limiter, signals
from queue_ratelimit.errors import RateLimited
from queue_ratelimit.http import BY_HOST, RateLimitedAdapter
from queue_ratelimit.testing import HiddenLimitUpstream

TASKS = 40


def session_for(limiter: Limiter) -> requests.Session:
    """A session whose every request is limited by its host."""
    session = requests.Session()
    adapter = RateLimitedAdapter(limiter, BY_HOST, max_wait=2.0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def call(session: requests.Session, url: str) -> str:
    """GET ``url`` until it is served, waiting out what the limiter says."""
    while True:
        try:
            session.get(url, timeout=10).raise_for_status()
            return url.rsplit("/", 1)[-1]
        except RateLimited as exc:  # refused before sending, or a 429 met: wait, retry
            time.sleep(min(exc.retry_after, 5.0))


def main(urls: list[str]) -> int:
    limiter = Limiter()  # in memory: one process; pass a RedisBackend to share a fleet's
    session = session_for(limiter)
    if urls:
        for url in urls:
            answer = session.get(url, timeout=10)
            print(f"{answer.status_code} {url} (limited as {limiter.for_host(*_host(url))})")
        return 0
    backoffs: list[str] = []

    def met(sender: object, **fields: Any) -> None:
        backoffs.append(fields["integration"])

    signals.backoff.connect(met, weak=False)
    with HiddenLimitUpstream(6, 1.0) as slow, HiddenLimitUpstream(20, 1.0) as fast:
        items = [f"{(slow, fast)[n % 2].url}/api/{uuid.uuid4().hex[:10]}" for n in range(TASKS)]
        with ThreadPoolExecutor(8) as pool:
            done = list(pool.map(lambda url: call(session, url), items))
        names = sorted(n for n in limiter.configs if n.startswith("host-"))
        print(f"hosts limited on their own: {', '.join(names)}")
        ids = [url.rsplit("/", 1)[-1] for url in items]
        return _report(ids, done, len(backoffs), slow, fast)


def _report(ids: list[str], done: list[str], backoffs: int, *upstreams: HiddenLimitUpstream) -> int:
    """The examples' summary line, over both local upstreams."""
    lost = len(set(ids) - set(done))
    served = {call_id for upstream in upstreams for call_id in upstream.served}
    once = served == set(ids) and all(
        count == 1 for upstream in upstreams for count in upstream.served.values()
    )
    calls = sum(sum(upstream.status_counts.values()) for upstream in upstreams)
    refused = sum(upstream.count(429) for upstream in upstreams)
    print(
        f"by_host_requests: {len(ids)} tasks, {len(ids) - lost} done, {lost} lost; "
        f"{backoffs} backoffs, 0 requeues; local upstream: {calls} "
        f"calls, {refused} answered 429, "
        + ("every task served once" if once else "NOT every task served once"),
        flush=True,
    )
    return 0 if lost == 0 and once else 1


def _host(url: str) -> tuple[str, int | None, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "", parts.port, parts.scheme


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

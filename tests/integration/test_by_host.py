"""Zero configuration per host: ``BY_HOST`` clients against two real local upstreams.

Two ``HiddenLimitUpstream`` servers on two ports are two hosts: each request is limited
under its own host's integration, made on first use, and a backoff met on one host leaves
the other's rate alone. Known API hosts map to their built-ins.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import requests

from queue_ratelimit import Limiter
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.errors import RateLimited
from queue_ratelimit.hosts import MAX_HOSTS, OTHER_HOSTS, host_integration
from queue_ratelimit.http import BY_HOST, RateLimitedAdapter, RateLimitedTransport
from queue_ratelimit.testing import HiddenLimitUpstream


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[Limiter]:
    if request.param == "memory":
        yield Limiter()
        return
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("key_prefix")
    yield Limiter(RedisBackend(url, prefix=prefix))


def rate(limiter: Limiter, upstream: HiddenLimitUpstream) -> float:
    name = limiter.for_host("127.0.0.1", int(upstream.url.rsplit(":", 1)[1]), "http")
    return limiter.snapshot(name).limit().rate


def test_each_host_is_limited_on_its_own(limiter: Limiter) -> None:
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, BY_HOST, max_wait=5.0))
    with HiddenLimitUpstream(50, 1.0) as calm, HiddenLimitUpstream(50, 1.0) as throttled:
        for upstream in (calm, throttled):
            for _ in range(5):
                session.get(f"{upstream.url}/api/{uuid.uuid4().hex}", timeout=5)
        names = {n for n in limiter.configs if n.startswith("host-127_0_0_1-")}
        assert len(names) == 2  # one integration per host:port, made on first use
        before = rate(limiter, calm)
        throttled.storm(1.0, retry_after=1.0)
        with pytest.raises(RateLimited) as raised:
            session.get(f"{throttled.url}/api/{uuid.uuid4().hex}", timeout=5)
        assert raised.value.integration == limiter.for_host(
            "127.0.0.1", int(throttled.url.rsplit(":", 1)[1]), "http"
        )
        assert rate(limiter, throttled) < before  # the backoff lowered the throttled host
        assert rate(limiter, calm) == pytest.approx(before)  # and left the other alone
        calm_answer = session.get(f"{calm.url}/api/{uuid.uuid4().hex}", timeout=5)
        assert calm_answer.status_code == 200  # its host is not in a cooldown


def test_httpx_by_host_feeds_each_hosts_quota_headers_forward(limiter: Limiter) -> None:
    transport = RateLimitedTransport(limiter, BY_HOST, max_wait=2.0)
    with (
        httpx.Client(transport=transport) as client,
        HiddenLimitUpstream(3, 1.0, headers="x-ratelimit") as quota,
        HiddenLimitUpstream(50, 1.0) as plain,
    ):
        for _ in range(15):  # the start phase climbs past 3/s within these calls
            client.get(f"{quota.url}/api/{uuid.uuid4().hex}").raise_for_status()
            client.get(f"{plain.url}/api/{uuid.uuid4().hex}").raise_for_status()
        # the quota host's X-RateLimit-Remaining held its calls back: no 429 met
        assert quota.count(429) == 0 and quota.count(200) == 15
        assert plain.count(200) == 15
        assert rate(limiter, plain) > 3.0  # the other host climbed on, unheld


def test_known_api_hosts_use_their_builtins_and_names_are_safe() -> None:
    limiter = Limiter()
    assert limiter.for_host("api.github.com", 443, "https") == "github"
    assert limiter.for_host("API.GitHub.com.", None, "https") == "github"
    assert limiter.for_host("api.github.com", 8443, "https").startswith("host-api_github_com-")
    assert limiter.for_host("example.com", 80, "http") == "host-example_com"
    assert limiter.for_host("::1", 8080, "http").startswith("host-__1-")
    long_host = "a" * 60 + ".example.com"
    name = limiter.for_host(long_host, None, "https")
    assert len(name) <= 64 and name != limiter.for_host("b" * 60 + ".example.com")
    assert limiter.config(name).max_rate == 50.0  # host_config's cautious defaults
    different = [("a-b.com", None), ("a.b-com", None), ("a.b", None), ("a_b", None),
                 ("svc-8080", None), ("svc", 8080)]  # fmt: skip
    names = {host_integration(host, port, "https", {}) for host, port in different}
    assert len(names) == len(different)
    assert host_integration("bücher.de", None, "https", {}) == host_integration(
        "xn--bcher-kva.de", None, "https", {}
    )  # httpx gives the Unicode host, requests the IDNA one: one integration


def test_hosts_past_the_cap_share_one_integration() -> None:
    limiter = Limiter()
    names = {limiter.for_host(f"h{n}.example.com") for n in range(MAX_HOSTS + 10)}
    assert OTHER_HOSTS in names and len(names) == MAX_HOSTS + 1
    assert sum(1 for name in limiter.configs if name.startswith("host-")) == MAX_HOSTS + 1

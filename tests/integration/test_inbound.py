"""The inbound middleware on a real server: ``examples/inbound_api.py`` served by uvicorn in
a subprocess, its limits in Redis, hammered by client processes with httpx.

Per client the app allows 10 requests a second in bursts of 10 (and 5,000 a day), 200 a
second for all clients, ``/search`` 2 a second per client; ``/health`` is exempt.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from queue_ratelimit import IntegrationConfig, Limiter, parse_rate_limit
from queue_ratelimit.http import RateLimitedTransport
from tests.support import free_port, most_in_one_second, new_prefix, wait_until

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
PER_CLIENT, BURST = 10.0, 10.0


@pytest.fixture(scope="module")
def api(redis_url: str) -> Iterator[str]:
    """The example app under uvicorn (one worker), its limits in Redis under a new prefix."""
    port = free_port()
    env = {**os.environ, "QRL_INBOUND_STORE": redis_url, "QRL_INBOUND_PREFIX": new_prefix()}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.inbound_api:app",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"uvicorn exited: {server.stdout.read() if server.stdout else ''}")
        try:
            return httpx.get(f"{base}/health", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, timeout=30, every=0.1)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


def hammer(base: str, key: str, seconds: float, out: Any) -> None:
    """One client process: requests back to back for ``seconds`` with ``key``; the server's
    time of each 200 and the count of each status."""
    served, statuses = [], {}
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            answer = client.get(f"{base}/items/x", headers={"X-API-Key": key})
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            if answer.status_code == 200:
                served.append(answer.json()["served_at"])
    out.put((served, statuses))


def test_a_keys_limit_holds_in_every_second_under_four_processes_and_spares_other_keys(
    api: str,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=hammer, args=(api, "hot-key", 3.0, out)) for _ in range(4)]
    for proc in procs:
        proc.start()
    calm: list[int] = []
    with httpx.Client(timeout=5.0) as client:  # another key, well inside its own limit
        for _ in range(12):
            calm.append(client.get(f"{api}/items/y", headers={"X-API-Key": "calm"}).status_code)
            time.sleep(0.2)
    results = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    served = [at for times, _ in results for at in times]
    refused = sum(statuses.get(429, 0) for _, statuses in results)
    errors = {s for _, statuses in results for s in statuses if s not in (200, 429)}
    assert not errors
    assert refused > 0  # the four processes asked far more than the key allows
    assert most_in_one_second(served) <= PER_CLIENT + BURST  # rate + burst, every window
    assert len(served) <= BURST + PER_CLIENT * 3.5  # and over the whole run
    assert calm == [200] * len(calm)  # the other key never felt it


def test_refusals_carry_retry_after_and_fields_our_parser_reads(api: str) -> None:
    with httpx.Client(timeout=5.0) as client:
        answers = [client.get(f"{api}/items/z", headers={"X-API-Key": "fields"}) for _ in range(15)]
    granted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert granted and refused
    info = parse_rate_limit(200, granted[-1].headers)
    assert info.remaining is not None and info.reset_after is not None
    # the policies by name (the parser writes them with ``_``): the key's per second and
    # per day, the global one; the key's per-second policy binds: it is the headline
    assert set(info.quotas) == {"per_client", "per_client_2", "global"}
    assert info.quotas["per_client"].limit == 10 and info.quotas["per_client_2"].limit == 5000
    assert info.limit == 10 and info.remaining is not None and info.remaining < 10
    last = parse_rate_limit(429, refused[-1].headers)
    assert last.backoff and last.retry_after is not None and last.retry_after >= 1.0
    assert refused[-1].headers["RateLimit"].endswith("r=0;t=" + refused[-1].headers["Retry-After"])


def test_our_client_paced_by_the_apps_own_fields_meets_no_429_once_warm(api: str) -> None:
    # the client believes it may go at 40/s; the app allows 10/s per key and says so
    config = IntegrationConfig(
        name="inbound-api",
        rate_limit_per_sec=40.0,
        max_rate=40.0,
        burst_size=1.0,
        max_wait=5.0,
        slow_start=False,
    )
    limiter = Limiter(configs={"inbound-api": config})
    transport = RateLimitedTransport(limiter, "inbound-api", raise_on_backoff=False)
    statuses = []
    with httpx.Client(transport=transport, timeout=5.0) as client:
        for _ in range(40):
            statuses.append(
                client.get(f"{api}/items/w", headers={"X-API-Key": "paced"}).status_code
            )
    assert statuses[:3] == [200] * 3
    assert statuses[5:] == [200] * 35, statuses  # fed forward: paced, not refused


def test_exemptions_and_route_dependencies(api: str) -> None:
    with httpx.Client(timeout=5.0) as client:
        health = [client.get(f"{api}/health").status_code for _ in range(40)]
        search = [client.get(f"{api}/search", headers={"X-API-Key": "searcher"}) for _ in range(5)]
    assert health == [200] * 40  # exempt from every rule
    codes = [answer.status_code for answer in search]
    assert codes[:2] == [200, 200] and 429 in codes  # /search: 2 at once per client
    assert "RateLimit" in search[0].headers and "Retry-After" in search[-1].headers


@pytest.mark.parametrize(
    "key",
    [
        "x" * 8192,  # very long
        "💥 ключ مفتاح",  # unicode (sent as UTF-8 bytes)
        "a\tb\x7f" + "\u200b" * 10,  # control characters and zero-width spaces
        "9" * 400 + "; DROP TABLE",  # absurd
    ],
)
def test_hostile_keys_are_limited_apart_without_errors(api: str, key: str) -> None:
    with httpx.Client(timeout=5.0) as client:
        hostile = [
            client.get(f"{api}/items/h", headers={"X-API-Key": key.encode()}).status_code
            for _ in range(14)
        ]
        neighbour = client.get(f"{api}/items/h", headers={"X-API-Key": key[:-1].encode()})
        weird = client.get(
            f"{api}/items/h",
            headers={"RateLimit": "x" * 5000, "Retry-After": "-1e309", "X-API-Key": "ok"},
        )
    assert set(hostile) <= {200, 429} and 429 in hostile  # limited, never a 500
    assert neighbour.status_code == 200  # a key one character apart is another key
    assert weird.status_code == 200

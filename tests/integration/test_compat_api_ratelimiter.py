"""The ``api_ratelimiter`` library's README snippets, their import line changed, on this project.

Each snippet is quoted as the seed library's README prints it; the test changes only its
``from api_ratelimiter...`` line to ``from queue_ratelimit.compat.api_ratelimiter...`` and
points the README's placeholder URLs at a real local server that answers ``429`` with
``Retry-After`` to every third call and ``500`` on a failing path. It checks what the library
documents: a backoff is waited out and retried, then succeeds; the breaker raises
``CircuitOpenError`` after its failure threshold; the metrics handler gets one dict per
request with the status and the latency; JSON overrides add an integration.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.compat.api_ratelimiter import DynamicRateLimiter, clients

QUICK_START = """
from api_ratelimiter.clients import make_client_from_config

client = make_client_from_config("notion")

resp = client.request(
    "GET",
    "/v1/databases",
    headers={"Authorization": "Bearer YOUR_TOKEN", "Notion-Version": "2022-06-28"},
    timeout=10.0,  # strongly recommended: always set a timeout
)
resp.raise_for_status()
print(resp.json())
"""

FULL_CONTROL = """
from api_ratelimiter.dynamic_ratelimiter import DynamicRateLimiter
from api_ratelimiter.clients import DynamicAPIClient

limiter = DynamicRateLimiter(
    rate_limit_per_sec=3.0,
    burst_size=3.0,
    increase_factor=0.1,
    decrease_factor=0.5,
    min_rate=0.1,
    max_rate=10.0,
    cooldown_multiplier=1.5,
)

client = DynamicAPIClient(
    base_url="https://api.example.com",
    limiter=limiter,
    backoff_status_codes=(429, 503),
)

response = client.request("GET", "/v1/resource", timeout=10.0)
"""

ENTERPRISE = """
from api_ratelimiter.enterprise import (
    EnterpriseClient,
    CircuitBreakerConfig,
    CircuitOpenError,
)

from api_ratelimiter.api_rate_config import get_api_rate_config

def metrics_handler(event: dict) -> None:
    # Example: push to your metrics system of choice.
    # `event` includes: integration, tenant_id, status_code, elapsed_ms,
    # limiter snapshot, context, and error details (if any).
    print("EVENT", event)

enterprise_client = EnterpriseClient(
    integration="notion",
    tenant_id="tenant-123",
    base_url="https://api.notion.com",
    rate_config=get_api_rate_config("notion"),
    circuit_breaker_config=CircuitBreakerConfig(
        failure_threshold=5,
        open_interval=60.0,
    ),
    metrics_handler=metrics_handler,
)

try:
    resp = enterprise_client.request(
        "GET", "/v1/databases", timeout=10.0
    )
except CircuitOpenError:
    # The circuit is open; you may want to short-circuit or return a fast failure.
    ...
"""

OVERRIDES = """
from api_ratelimiter.config_overrides import (
    load_api_rate_overrides_json,
    merged_api_rate_configs,
    list_available_integrations,
)

overrides = load_api_rate_overrides_json("overrides.json")
configs = merged_api_rate_configs(overrides)

print("Available integrations:", list_available_integrations(configs))
"""

OVERRIDE_FILE = {
    "custom_api": {
        "rate_limit_per_sec": 2.0,
        "burst_size": 2.0,
        "increase_factor": 0.1,
        "decrease_factor": 0.5,
        "min_rate": 0.1,
        "max_rate": 5.0,
        "cooldown_multiplier": 1.5,
    }
}


class Upstream(ThreadingHTTPServer):
    """Every third call: 429 with Retry-After 0.2; a path with /fail: 500; else 200."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.answers: list[tuple[str, int]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def decide(self, path: str) -> int:
        with self.lock:
            status = 429 if (len(self.answers) + 1) % 3 == 0 else 200
            if "/fail" in path:
                status = 500
            self.answers.append((path, status))
            return status


class _Handler(BaseHTTPRequestHandler):
    server: Upstream

    def log_message(self, format: str, *args: object) -> None:
        """Silent."""

    def do_GET(self) -> None:
        status = self.server.decide(self.path)
        payload = json.dumps({"object": "list", "results": [], "status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == 429:
            self.send_header("Retry-After", "0.2")
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setitem(clients.BASE_URLS, "notion", server.url)  # the quick start's API
    yield server
    server.shutdown()
    server.server_close()


def run(snippet: str, upstream: Upstream) -> tuple[dict[str, Any], str]:
    """Run a README snippet with its import changed and its URLs pointed at ``upstream``."""
    code = snippet.replace("from api_ratelimiter.", "from queue_ratelimit.compat.api_ratelimiter.")
    for placeholder in ("https://api.example.com", "https://api.notion.com"):
        code = code.replace(placeholder, upstream.url)
    namespace: dict[str, Any] = {}
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "<README snippet>", "exec"), namespace)
    return namespace, out.getvalue()


def test_the_quick_start_waits_out_a_429_and_retries(upstream: Upstream) -> None:
    for _ in range(3):  # the third call of the run is answered 429
        namespace, out = run(QUICK_START, upstream)
        assert "'results': []" in out
    statuses = [status for _, status in upstream.answers]
    assert statuses == [200, 200, 429, 200]  # retried after its Retry-After, then served
    assert namespace["resp"].status_code == 200


def test_full_control_gives_up_with_runtime_error_after_its_retries(upstream: Upstream) -> None:
    namespace, _ = run(FULL_CONTROL, upstream)
    assert namespace["response"].status_code == 200
    client = namespace["client"]
    client.max_retries_on_backoff = 0  # a backoff now raises at once, as documented
    client.request("GET", "/v1/resource", timeout=10.0)  # the 2nd call: 200
    with pytest.raises(RuntimeError, match="429"):
        client.request("GET", "/v1/resource", timeout=10.0)  # the 3rd: 429
    snapshot = namespace["limiter"].snapshot()
    assert snapshot["rate"] < 3.0 and snapshot["cooldown_remaining"] > 0  # it backed off


def test_enterprise_metrics_and_breaker(upstream: Upstream) -> None:
    namespace, out = run(ENTERPRISE, upstream)
    assert out.count("EVENT") == 1  # one metrics dict for the snippet's one request
    events: list[dict[str, Any]] = []
    client = namespace["enterprise_client"]
    client.metrics_handler = events.append
    for _ in range(5):  # the failure threshold
        assert client.request("GET", "/v1/fail", timeout=10.0).status_code == 500
    with pytest.raises(namespace["CircuitOpenError"]) as raised:
        client.request("GET", "/v1/fail", timeout=10.0)
    assert 0 < raised.value.retry_after <= 60.0
    assert len(events) == 6  # one per request, the refused one included
    assert [event["status_code"] for event in events] == [500] * 5 + [None]
    assert all(event["elapsed_ms"] >= 0 and event["tenant_id"] == "tenant-123" for event in events)
    assert events[-1]["error"].startswith("CircuitOpenError")
    assert len([path for path, _ in upstream.answers if "fail" in path]) == 5  # none sent open


def test_json_overrides_add_an_integration(
    upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "overrides.json").write_text(json.dumps(OVERRIDE_FILE))
    monkeypatch.chdir(tmp_path)
    namespace, out = run(OVERRIDES, upstream)
    assert "custom_api" in namespace["list_available_integrations"](namespace["configs"])
    assert "'custom_api'" in out and "'notion'" in out
    assert namespace["configs"]["custom_api"].max_rate == 5.0


def test_one_more_argument_shares_the_limit_through_redis(redis_url: str, key_prefix: str) -> None:
    one, two = (
        DynamicRateLimiter(4.0, name="shared", backend=RedisBackend(redis_url, prefix=key_prefix))
        for _ in range(2)
    )
    one.on_429(retry_after=0.5)
    seen = two.snapshot()  # another process's limiter would see the same
    assert seen["rate"] == pytest.approx(2.0) and seen["cooldown_remaining"] > 0

"""What the HTTP clients report: cost corrections, breaker failures, and never a secret."""

from __future__ import annotations

import dataclasses
import logging
import socket
from typing import Any

import httpx
import pytest
import requests

from queue_ratelimit import IntegrationConfig, LimitConfig, Limiter, MemoryBackend, RateLimited
from queue_ratelimit import signals as sig
from queue_ratelimit.http import BY_TOKEN, RateLimitedAdapter, RateLimitedTransport, token_tenant
from queue_ratelimit.testing import HiddenLimitUpstream
from tests.conftest import FakeClock

LLM = IntegrationConfig(
    name="llm",
    rate_limit_per_sec=1.0,
    burst_size=10.0,
    min_rate=0.1,
    max_rate=10.0,
    max_wait=0.0,
    breaker_failure_threshold=3,
    breaker_open_seconds=30.0,
    limits=(
        LimitConfig(
            "tokens", rate_limit_per_sec=100.0, burst_size=1000.0, min_rate=1.0, max_rate=1000.0
        ),
    ),
)


def _session(limiter: Limiter, base: str, **options: Any) -> requests.Session:
    session = requests.Session()
    session.mount(base, RateLimitedAdapter(limiter, "llm", **options))
    return session


def test_estimated_tokens_are_acquired_then_corrected_by_the_reported_usage(
    clock: FakeClock,
) -> None:
    limiter = Limiter(MemoryBackend(clock=clock), {"llm": LLM})
    seen: list[float] = []

    def estimate(request: requests.PreparedRequest) -> dict[str, float]:
        seen.append(limiter.snapshot("llm").limit("tokens").tokens)
        return {"tokens": 500.0}

    def usage(response: requests.Response) -> dict[str, float]:
        tokens = limiter.snapshot("llm").limit("tokens").tokens
        seen.append(tokens)  # after the acquire, before the correction
        return {"tokens": float(response.json()["usage"]["total_tokens"])}

    with HiddenLimitUpstream(limit=100) as upstream:
        session = _session(limiter, upstream.url, estimate=estimate, usage=usage)
        session.get(f"{upstream.url}/llm/1?tokens=320").raise_for_status()
    snap = limiter.snapshot("llm")
    assert seen == [1000.0, 500.0]  # the estimate was paid before the call
    assert snap.limit("tokens").tokens == 680.0  # and corrected to the 320 really used
    assert snap.limit("requests").tokens == 9.0


def test_transport_errors_open_the_breaker_and_then_nothing_is_sent(clock: FakeClock) -> None:
    limiter = Limiter(MemoryBackend(clock=clock), {"llm": LLM})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening
        client = httpx.Client(transport=RateLimitedTransport(limiter, "llm"), base_url=dead)
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                client.get("/llm/x")
        assert limiter.snapshot("llm").breaker == "open"
        with pytest.raises(RateLimited) as info:
            client.get("/llm/x")
        assert info.value.retry_after == 30.0


def test_a_backoff_can_be_returned_instead_of_raised(clock: FakeClock) -> None:
    limiter = Limiter(MemoryBackend(clock=clock), {"llm": dataclasses.replace(LLM, max_wait=5)})
    with HiddenLimitUpstream(limit=1, window=60) as upstream:
        session = _session(limiter, upstream.url, raise_on_backoff=False)
        assert session.get(f"{upstream.url}/llm/1").status_code == 200
        answer = session.get(f"{upstream.url}/llm/2")
        assert answer.status_code == 429
        assert limiter.snapshot("llm").cooldown_left > 0


SECRET = "Bearer sk-live-5f0e1d2c3b4a-DO-NOT-LEAK"


@pytest.mark.parametrize("tenant", [None, BY_TOKEN])
def test_the_authorization_header_never_leaks(
    tenant: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = Limiter(configs={"llm": dataclasses.replace(LLM, max_wait=5)})
    payloads: list[str] = []

    def record(sender: object, **fields: Any) -> None:
        payloads.append(repr(fields))

    catalogue = [
        sig.acquired,
        sig.throttled,
        sig.backoff,
        sig.rate_changed,
        sig.reservation_redeemed,
        sig.breaker_opened,
        sig.breaker_closed,
    ]
    for signal in catalogue:
        signal.connect(record)
    errors: list[str] = []
    try:
        with caplog.at_level(logging.DEBUG), HiddenLimitUpstream(limit=1, window=60) as upstream:
            session = _session(limiter, upstream.url, tenant=tenant)
            headers = {"Authorization": SECRET}
            session.get(f"{upstream.url}/llm/1", headers=headers).raise_for_status()
            with pytest.raises(RateLimited) as info:
                session.get(f"{upstream.url}/llm/2", headers=headers)
            errors += [str(info.value), repr(info.value), repr(info.value.args)]
            with pytest.raises(RateLimited) as again:  # refused before sending: cooldown
                session.get(f"{upstream.url}/llm/3", headers=headers)
            errors += [str(again.value), repr(again.value)]
    finally:
        for signal in catalogue:
            signal.disconnect(record)
    assert payloads and errors
    secret_part = "sk-live-5f0e1d2c3b4a"
    assert not [text for text in payloads + errors + [caplog.text] if secret_part in text]
    if tenant == BY_TOKEN:
        assert token_tenant(SECRET) in errors[0]  # keyed per token, by a digest


def test_inside_a_task_the_first_call_uses_the_tasks_slot_and_tenant(clock: FakeClock) -> None:
    from queue_ratelimit import context

    limiter = Limiter(MemoryBackend(clock=clock), {"llm": LLM})
    decision = limiter.acquire("llm", "ws-1")  # what the task acquired before its body
    slot = context.Prepaid("llm", "ws-1", decision)
    with HiddenLimitUpstream(limit=100) as upstream:
        session = _session(limiter, upstream.url)  # built without a tenant
        with context.running(context.TaskInfo("t", "id-1"), slot):
            session.get(f"{upstream.url}/llm/1").raise_for_status()  # prepaid
            session.get(f"{upstream.url}/llm/2").raise_for_status()  # acquires: ws-1 again
    assert slot.used
    assert limiter.snapshot("llm", "ws-1").limit().tokens == 8.0  # 2 calls, 2 tokens
    assert not limiter.snapshot("llm").exists  # nothing charged to the tenant-less key


def test_the_prepaid_slot_is_not_waited_for_twice(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from queue_ratelimit import context

    slept: list[float] = []
    limiter = Limiter(MemoryBackend(clock=clock), {"llm": dataclasses.replace(LLM, max_wait=5.0)})
    limiter.acquire("llm", cost=10.0)  # empty the bucket: the next slot is 1 s away
    decision = limiter.acquire("llm")
    assert decision.granted and decision.wait == 1.0
    slot = context.Prepaid("llm", None, decision)  # the task slept decision.wait already
    with (
        HiddenLimitUpstream(limit=100) as upstream,
        context.running(context.TaskInfo("t", "id"), slot),
    ):
        monkeypatch.setattr(time, "sleep", slept.append)  # record any wait, sleep none
        _session(limiter, upstream.url).get(f"{upstream.url}/llm/1").raise_for_status()
    assert slot.used and slept == []


def test_httpx_usage_reads_successes_only_and_never_breaks_a_429(clock: FakeClock) -> None:
    limiter = Limiter(MemoryBackend(clock=clock), {"llm": dataclasses.replace(LLM, max_wait=5)})
    seen: list[int] = []

    def usage(response: httpx.Response) -> dict[str, float]:
        seen.append(response.status_code)
        return {"tokens": float(response.json()["usage"]["total_tokens"])}  # KeyError on a 429

    with HiddenLimitUpstream(limit=1, window=60) as upstream:
        transport = RateLimitedTransport(
            limiter, "llm", estimate=lambda r: {"tokens": 500.0}, usage=usage
        )
        with httpx.Client(transport=transport, base_url=upstream.url) as client:
            assert client.get("/llm/1?tokens=120").status_code == 200
            assert limiter.snapshot("llm").limit("tokens").tokens == 1000 - 120  # corrected
            with pytest.raises(RateLimited):
                client.get("/llm/2?tokens=120")
    assert seen == [200]  # usage() never saw the 429
    assert limiter.snapshot("llm").cooldown_left > 0  # the 429 was reported as a backoff


def test_inside_a_task_the_usage_is_charged_in_full(clock: FakeClock) -> None:
    from queue_ratelimit import context

    limiter = Limiter(MemoryBackend(clock=clock), {"llm": LLM})
    slot = context.Prepaid("llm", None, limiter.acquire("llm"))  # the task paid 1 request
    with HiddenLimitUpstream(limit=100) as upstream:
        session = _session(
            limiter,
            upstream.url,
            estimate=lambda r: {"tokens": 1200.0},
            usage=lambda r: {"tokens": float(r.json()["usage"]["total_tokens"])},
        )
        with context.running(context.TaskInfo("t", "id"), slot):
            session.get(f"{upstream.url}/llm/1?tokens=1100").raise_for_status()
    assert limiter.snapshot("llm").limit("tokens").tokens == 1000 - 1100


def test_a_tasks_declared_cost_is_paid_before_the_body_and_corrected_by_the_usage(
    clock: FakeClock,
) -> None:
    from queue_ratelimit import context
    from queue_ratelimit.tasks import Run, TaskCall, TaskGate, Ticket

    limiter = Limiter(MemoryBackend(clock=clock), {"llm": LLM})
    gate = TaskGate(limiter, clock=clock)
    cost = {"tokens": 900.0}  # what the task says a run spends
    verdict = gate.before(TaskCall("llm", None, cost), Ticket())
    assert isinstance(verdict, Run)
    assert limiter.snapshot("llm").limit("tokens").tokens == 1000 - 900  # paid up front
    slot = context.Prepaid("llm", None, verdict.decision, cost)
    with HiddenLimitUpstream(limit=100) as upstream:
        session = _session(
            limiter,
            upstream.url,
            usage=lambda r: {"tokens": float(r.json()["usage"]["total_tokens"])},
        )
        with context.running(context.TaskInfo("t", "id"), slot):
            session.get(f"{upstream.url}/llm/1?tokens=1100").raise_for_status()
    assert limiter.snapshot("llm").limit("tokens").tokens == 1000 - 1100  # 200 more charged


def test_a_call_ended_by_the_callers_own_exception_gives_its_lease_back(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from requests.adapters import HTTPAdapter

    limiter = Limiter(
        MemoryBackend(clock=clock), {"llm": dataclasses.replace(LLM, max_concurrent=1)}
    )

    def broken_send(self: HTTPAdapter, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("not a requests error")

    with HiddenLimitUpstream(limit=100) as upstream:
        session = _session(limiter, upstream.url)
        with monkeypatch.context() as patch:
            patch.setattr(HTTPAdapter, "send", broken_send)
            with pytest.raises(RuntimeError):
                session.get(f"{upstream.url}/llm/1")
        assert limiter.snapshot("llm").leases == 0  # not held until lease_ttl
        session.get(f"{upstream.url}/llm/2").raise_for_status()

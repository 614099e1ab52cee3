"""Blocking clients for code outside a task queue: ``retries`` waits out a backoff and tries
again (honouring ``Retry-After``, within ``retry_deadline``); inside a task it requeues.

Against a real local upstream that allows 2 calls per second and answers ``429`` with
``Retry-After: 1`` beyond, a limiter allowed far more: the first calls meet 429s.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import NoReturn

import httpx
import pytest
import requests

from queue_ratelimit import IntegrationConfig, Limiter, RateLimited, context
from queue_ratelimit.http import AsyncRateLimitedTransport, RateLimitedAdapter
from queue_ratelimit.testing import HiddenLimitUpstream

API = IntegrationConfig(
    name="api", rate_limit_per_sec=20.0, burst_size=5.0, max_rate=50.0, slow_start=False
)


def _session(retries: int, deadline: float | None = None) -> tuple[requests.Session, Limiter]:
    limiter = Limiter(configs={"api": API})
    session = requests.Session()
    adapter = RateLimitedAdapter(
        limiter, "api", max_wait=5.0, retries=retries, retry_deadline=deadline
    )
    session.mount("http://", adapter)
    return session, limiter


def test_retries_wait_out_each_429_and_every_call_is_served_once() -> None:
    session, _ = _session(retries=5)
    ids = {uuid.uuid4().hex for _ in range(6)}
    with HiddenLimitUpstream(2, 1.0) as upstream:
        for call_id in ids:
            assert session.get(f"{upstream.url}/api/{call_id}", timeout=5).status_code == 200
        assert upstream.count(429) >= 1  # the retries were needed
        assert upstream.served_once(ids)


def test_without_retries_a_backoff_raises_at_once() -> None:
    session, _ = _session(retries=0)
    with HiddenLimitUpstream(2, 1.0) as upstream, pytest.raises(RateLimited):
        for _ in range(6):
            session.get(f"{upstream.url}/api/{uuid.uuid4().hex}", timeout=5)


def test_a_wait_past_the_deadline_raises() -> None:
    session, _ = _session(retries=5, deadline=0.5)  # Retry-After: 1 does not fit
    with HiddenLimitUpstream(2, 1.0) as upstream, pytest.raises(RateLimited) as raised:
        for _ in range(6):
            session.get(f"{upstream.url}/api/{uuid.uuid4().hex}", timeout=5)
    assert raised.value.retry_after >= 0.5


class Requeued(Exception):
    """What a task framework's requeue hook raises."""


def test_inside_a_task_a_backoff_requeues_instead_of_retrying() -> None:
    session, _ = _session(retries=5)
    seen: list[RateLimited] = []

    def requeue(exc: RateLimited) -> NoReturn:
        seen.append(exc)
        raise Requeued

    task = context.TaskInfo("task", "1")
    with HiddenLimitUpstream(2, 1.0) as upstream:
        with context.running(task, None, requeue), pytest.raises(Requeued):
            for _ in range(6):
                session.get(f"{upstream.url}/api/{uuid.uuid4().hex}", timeout=5)
        assert len(seen) == 1 and upstream.count(429) == 1  # requeued at the first, no retry


def test_async_retries_wait_out_a_429_on_the_event_loop() -> None:
    limiter = Limiter(configs={"api": API})
    transport = AsyncRateLimitedTransport(limiter, "api", max_wait=5.0, retries=5)

    async def main(base: str) -> list[int]:
        async with httpx.AsyncClient(transport=transport) as client:
            answers = [await client.get(f"{base}/api/{uuid.uuid4().hex}") for _ in range(6)]
        return [answer.status_code for answer in answers]

    with HiddenLimitUpstream(2, 1.0) as upstream:
        assert asyncio.run(main(upstream.url)) == [200] * 6
        assert upstream.count(429) >= 1


def test_retries_are_validated() -> None:
    limiter = Limiter(configs={"api": API})
    with pytest.raises(ValueError, match="retries"):
        RateLimitedAdapter(limiter, "api", retries=-1)
    with pytest.raises(ValueError, match="retry_deadline"):
        RateLimitedAdapter(limiter, "api", retries=1, retry_deadline=0)

"""Every decision is announced; a broken receiver never breaks the caller."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from queue_ratelimit import Limiter, MemoryBackend, signals
from tests.conftest import FakeClock
from tests.support import SVC


@pytest.fixture
def events() -> Any:
    seen: list[tuple[str, dict[str, Any]]] = []
    catalogue = [
        signals.acquired,
        signals.throttled,
        signals.backoff,
        signals.rate_changed,
        signals.reservation_redeemed,
    ]
    receivers = []
    for sig in catalogue:

        def receiver(sender: object, _name: str = sig.name, **fields: Any) -> None:
            seen.append((_name, fields))

        sig.connect(receiver)
        receivers.append((sig, receiver))
    yield seen
    for sig, receiver in receivers:
        sig.disconnect(receiver)


def test_each_decision_emits_its_event(events: Any, clock: FakeClock) -> None:
    limiter = Limiter(MemoryBackend(clock=clock), {"svc": SVC})
    limiter.acquire("svc", "ws-1")
    held = limiter.acquire("svc", "ws-1")
    limiter.on_success("svc", "ws-1")
    limiter.on_backoff("svc", "ws-1", retry_after=2.0)
    clock.advance(2.0)
    limiter.acquire("svc", "ws-1", reservation=held.reservation)
    names = [name for name, _ in events]
    assert names == [
        "acquired",
        "throttled",
        "rate_changed",
        "backoff",
        "rate_changed",
        "throttled",
    ]
    assert all(
        fields["integration"] == "svc" and fields["tenant"] == "ws-1" for _, fields in events
    )
    throttled = events[1][1]
    assert throttled["reserved"] is True and throttled["wait"] == pytest.approx(0.1)
    assert events[2][1] == {
        "integration": "svc",
        "tenant": "ws-1",
        "old_rate": 10.0,
        "new_rate": 11.0,
    }
    assert events[3][1]["decreased"] is True and events[3][1]["retry_after"] == 2.0


def test_redeeming_a_reservation_is_announced(events: Any, clock: FakeClock) -> None:
    limiter = Limiter(MemoryBackend(clock=clock), {"svc": SVC})
    limiter.acquire("svc")
    held = limiter.acquire("svc")
    clock.advance(0.1)
    limiter.acquire("svc", reservation=held.reservation)
    assert [name for name, _ in events][-2:] == ["reservation_redeemed", "acquired"]


def test_a_failing_receiver_is_logged_and_skipped(
    caplog: pytest.LogCaptureFixture, events: Any
) -> None:
    def broken(sender: object, **fields: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.acquired.connect(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="queue_ratelimit.signals"):
            decision = Limiter(configs={"svc": SVC}).acquire("svc")
    finally:
        signals.acquired.disconnect(broken)
    assert decision.granted
    assert [name for name, _ in events] == ["acquired"]  # the other receiver still ran
    assert "receiver bug" in caplog.text

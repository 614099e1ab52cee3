"""One structured line per operator-relevant decision."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator

import pytest

from queue_ratelimit import Limiter, MemoryBackend, context
from queue_ratelimit.errors import RequeueBudgetExhausted
from queue_ratelimit.logs import install_logging, uninstall_logging
from queue_ratelimit.tasks import TaskCall, TaskGate, Ticket
from tests.conftest import FakeClock
from tests.support import SVC


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    install_logging()
    with caplog.at_level(logging.INFO, logger="queue_ratelimit"):
        yield caplog
    uninstall_logging()


def test_each_decision_is_one_structured_line(
    logged: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    config = dataclasses.replace(SVC, breaker_failure_threshold=1, requeue_budget=1)
    limiter = Limiter(MemoryBackend(clock=clock), {"svc": config})
    gate = TaskGate(limiter, clock=clock, rng=lambda: 0.0)
    with context.running(context.TaskInfo("app.sync", "task-1")):
        limiter.on_backoff("svc", "ws-1", retry_after=2.0)
        gate.before(TaskCall("svc", "ws-1"), Ticket())
        with pytest.raises(RequeueBudgetExhausted):
            gate.rate_limited(TaskCall("svc", "ws-1"), Ticket(1), 1.0)
    limiter.on_failure("svc")
    records = [r for r in logged.records if hasattr(r, "qrl_event")]
    events = [r.qrl_event for r in records]  # type: ignore[attr-defined]
    assert events == ["backoff", "task_requeued", "budget_exhausted", "breaker_opened"]
    assert all("\n" not in r.getMessage() for r in records)
    requeued = records[1]
    assert requeued.getMessage() == (
        "queue_ratelimit svc:ws-1 task app.sync[task-1]: requeued for 2.182s (cooldown, #1)"
    )
    assert requeued.qrl_task_id == "task-1" and requeued.qrl_countdown == pytest.approx(
        2.0 + math.log(1.2)
    )  # type: ignore[attr-defined]
    assert records[2].levelno == logging.ERROR and records[3].levelno == logging.WARNING

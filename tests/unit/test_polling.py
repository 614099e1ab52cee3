"""The breaker polls' log: an outage said once (and its end), a bug every time."""

from __future__ import annotations

import logging

import pytest

from queue_ratelimit.errors import BackendUnavailable
from queue_ratelimit.integrations.polling import PollLog

LOGGER = "tests.polling"


def test_an_outage_is_said_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    trouble = PollLog(logging.getLogger(LOGGER))
    down = BackendUnavailable("svc: the limiter backend is unavailable", retry_after=2.0)
    for _ in range(5):
        trouble.failed(down)
    trouble.succeeded()
    trouble.succeeded()
    trouble.failed(down)  # a second outage
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert "queues left as they are" in messages[0] and "unavailable" in messages[0]
    assert messages[1] == "queue_ratelimit: breaker check works again"
    assert "queues left as they are" in messages[2]
    assert all(record.exc_info is None for record in caplog.records)  # no traceback


def test_anything_else_is_a_bug_logged_with_its_traceback_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    trouble = PollLog(logging.getLogger(LOGGER))
    for _ in range(2):
        try:
            raise KeyError("queue")
        except KeyError as exc:
            trouble.failed(exc)
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.ERROR]
    assert all(r.exc_info is not None for r in caplog.records)
    trouble.succeeded()  # no outage to end: nothing said
    assert len(caplog.records) == 2

"""What the Celery, Dramatiq and RQ breaker polls share: how they report their failures."""

from __future__ import annotations

import logging
from typing import Any

from queue_ratelimit.errors import BackendError

__all__ = ["PollLog"]


class PollLog:
    """Reports a periodic breaker check's failures without flooding the worker's log.

    A shared-backend outage (``BackendError``, Redis down) is one warning when it starts and
    one when a check works again, however many polls fail in between: the queues stay as
    they were meanwhile. Any other exception is a bug and is logged with its traceback
    every time.

    Args:
        logger: where to log (the framework's worker logger, or the module's).
        what: the check's name in the log lines.
        meanwhile: what holds while the backend is down.
    """

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        what: str = "breaker check",
        meanwhile: str = "queues left as they are",
    ) -> None:
        self._log = logger
        self._what, self._meanwhile = what, meanwhile
        self._down = False

    def failed(self, exc: BaseException) -> None:
        """A check raised ``exc``."""
        if not isinstance(exc, BackendError):
            self._log.error("queue_ratelimit: %s failed", self._what, exc_info=exc)
        elif not self._down:
            self._down = True
            self._log.warning(
                "queue_ratelimit: %s failed, %s until the limiter's backend answers again: %s",
                self._what,
                self._meanwhile,
                exc,
            )

    def succeeded(self) -> None:
        """A check went through."""
        if self._down:
            self._down = False
            self._log.warning("queue_ratelimit: %s works again", self._what)

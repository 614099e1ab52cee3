"""The integration's circuit breaker as ``RedisBackend`` sees it: a view of its key (and of
the operators' overrides, read with it) that each decision is passed, read again when older
than ``breaker_poll``; an ADMIT while it is not closed; an operator's open or close. The
breaker's rules: ``policy/breaker.py`` (and the script).

``RedisBreaker`` is a part of ``RedisBackend`` (``redis.py``), on ``RedisArgs``.
"""

from __future__ import annotations

import time
from typing import Any

from queue_ratelimit.backends import redis_keys as layout
from queue_ratelimit.backends import redis_wire as wire
from queue_ratelimit.backends.redis_args import RedisArgs
from queue_ratelimit.backends.redis_steps import Steps
from queue_ratelimit.errors import BackendError
from queue_ratelimit.policy.state import Plan

__all__ = ["RedisBreaker"]

_META_EVERY = 300.0  # seconds between a process's writes of an integration's description


class RedisBreaker(RedisArgs):
    """The breaker's side of ``RedisBackend`` (see the module)."""

    _breaker_poll: float
    _views: dict[str, wire.View]
    _described: dict[str, tuple[float, str]]  # integration -> (when, text)

    def _breaker_steps(
        self, op: str, integration: str, plan: Plan, numbers: bytes = b"", word: str = ""
    ) -> Steps[tuple[wire.View, int, tuple[int, float]]]:
        """An op on the integration's breaker key: the view it leaves (kept), its answer,
        and the breaker's state and until before it."""
        breaker, meta, held = layout.integration_keys(self.prefix, integration)
        blob = self._blob(op, plan, numbers)
        if op == "view":
            args: tuple[Any, ...] = (3, breaker, meta, held, blob, word)
        else:
            args = (1, breaker, blob, word)
        state, failures, until, _now, answer, before, before_until, *pairs = yield (
            op,
            integration,
            args,
        )
        if op == "view":
            overrides, version = wire.overrides_from(pairs), wire.version_from(pairs)
        else:  # (what the last VIEW read)
            last = self._views.get(integration, wire.CLEAN)
            overrides, version = last.overrides, last.version
        view = wire.View(state, failures, until / wire.MICRO, time.monotonic(), overrides, version)
        self._views[integration] = view
        return view, answer, (before, before_until / wire.MICRO)

    def _breaker_op(
        self, op: str, integration: str, plan: Plan, numbers: bytes = b"", word: str = ""
    ) -> tuple[wire.View, int, tuple[int, float]]:
        return self._drive(self._breaker_steps(op, integration, plan, numbers, word))

    def _current_view(self, integration: str, plan: Plan) -> Steps[wire.View]:
        """The integration's breaker as a decision or a report is passed it: as last seen,
        read again when older than ``breaker_poll`` (this process may also be a fork that
        inherited an old view: RQ's work horse). While the breaker's shard does not answer,
        the last view holds until the next ``breaker_poll``."""
        view = self._views.get(integration, wire.CLEAN)
        if time.monotonic() - view.read < self._breaker_poll:
            return view
        try:
            return (yield from self._view_steps(integration, plan))
        except BackendError:
            view = self._views[integration] = view._replace(read=time.monotonic())
            return view

    def _view(self, integration: str, plan: Plan) -> wire.View:
        return self._drive(self._view_steps(integration, plan))

    def _view_steps(self, integration: str, plan: Plan) -> Steps[wire.View]:
        """The integration's breaker, read now (and kept); the read also writes the
        integration's description for the tools every few minutes."""
        word = ""
        if plan.limits:
            described = wire.plan_json(plan, self._idle_ttl)
            when, last = self._described.get(integration, (float("-inf"), ""))
            if described != last or time.monotonic() - when > _META_EVERY:
                word = described
                self._described[integration] = (time.monotonic(), described)
        return (yield from self._breaker_steps("view", integration, plan, word=word))[0]

    def _admit(
        self, integration: str, plan: Plan
    ) -> Steps[tuple[tuple[int, float], tuple[float, float, float] | None]]:
        """The breaker an acquire is passed while the breaker is not closed (the verdict of
        an ADMIT on its key), and when this caller took the probe, what gives it back."""
        view, answer, before = yield from self._breaker_steps("admit", integration, plan)
        if answer == 0:
            return (wire.CLOSED, 0.0), None
        if answer == 1:
            return (view.state, view.until), None
        return (wire.HALF_OPEN, 0.0), (before[0], before[1], view.until)

    def set_breaker(self, integration: str, state: str, open_seconds: float) -> None:
        """See ``Backend.set_breaker``."""
        if state not in ("open", "closed"):
            raise ValueError(f"breaker state must be 'open' or 'closed', not {state!r}")
        self._breaker_op("breaker", integration, wire.NO_PLAN, wire.pack([open_seconds]), state)

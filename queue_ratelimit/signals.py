"""The event catalogue: every limiter decision is announced here.

Receivers are plain callables taking the sender and keyword arguments; connect them with
``acquired.connect(fn)``. Every event carries ``integration`` and ``tenant``; the other fields
are listed beside each signal. A receiver that raises is logged and skipped: it never breaks
the caller's task. Metrics, logs and the CLI subscribe here; the core never imports them.
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import NamedSignal, Namespace

from queue_ratelimit import context

__all__ = [
    "acquired",
    "backend_recovered",
    "backend_unavailable",
    "backoff",
    "breaker_closed",
    "breaker_opened",
    "budget_exhausted",
    "emit",
    "override_cleared",
    "override_set",
    "quota_exhausted",
    "rate_changed",
    "reservation_redeemed",
    "task_requeued",
    "throttled",
]

log = logging.getLogger(__name__)
_events = Namespace()

acquired: NamedSignal = _events.signal(
    "acquired",
    doc="A call was granted. Fields: integration, tenant, wait, cost, reason, slot (when the "
    "call may go: the decision's time plus its wait, seconds since the epoch on the backend's "
    "clock).",
)
throttled: NamedSignal = _events.signal(
    "throttled",
    doc="A call was not granted. Fields: integration, tenant, wait, reason, reserved (bool).",
)
backoff: NamedSignal = _events.signal(
    "backoff",
    doc="The upstream said slow down. Fields: integration, tenant, retry_after, decreased, "
    "cooldown_left.",
)
rate_changed: NamedSignal = _events.signal(
    "rate_changed", doc="The AIMD rate moved. Fields: integration, tenant, old_rate, new_rate."
)
reservation_redeemed: NamedSignal = _events.signal(
    "reservation_redeemed",
    doc="A requeued call came back and used its reserved slot. Fields: integration, tenant, wait.",
)

breaker_opened: NamedSignal = _events.signal(
    "breaker_opened",
    doc="The integration's breaker opened (failures, a failed probe, or an operator). "
    "Fields: integration, tenant (of the call that tipped it, or None), forced.",
)
breaker_closed: NamedSignal = _events.signal(
    "breaker_closed",
    doc="The integration's breaker closed (a probe succeeded, or an operator). Fields: "
    "integration, tenant, forced.",
)

quota_exhausted: NamedSignal = _events.signal(
    "quota_exhausted",
    doc="The upstream stated a wait longer than max_backoff (a spent daily or monthly quota): "
    "the key holds until then and tasks are parked without spending budget; sent once per "
    "hold, by the report that opened or lengthened it. Fields: integration, tenant, "
    "retry_after, until (epoch seconds).",
)
override_set: NamedSignal = _events.signal(
    "override_set",
    doc="An operator set run-time bounds on a key's rate (queue-ratelimit set, "
    "Limiter.set_override); every worker's next decision obeys them. Fields: integration, "
    "tenant (None: the whole integration), max_rate, min_rate (None: the config's), by.",
)
override_cleared: NamedSignal = _events.signal(
    "override_cleared",
    doc="An operator removed a key's run-time bounds (queue-ratelimit unset); the config's "
    "hold again. Fields: integration, tenant, by.",
)
backend_unavailable: NamedSignal = _events.signal(
    "backend_unavailable",
    doc="The shared state (Redis) stopped answering for this process. Fields: integration, "
    "tenant, mode ('open': a local fallback limiter decides; 'closed': tasks are requeued), "
    "error (the exception's class and message; never a URL or credential).",
)
backend_recovered: NamedSignal = _events.signal(
    "backend_recovered",
    doc="The shared state answers again; decisions are shared again. Fields: integration, "
    "tenant, down_for (seconds).",
)

task_requeued: NamedSignal = _events.signal(
    "task_requeued",
    doc="A task went back to the broker instead of waiting in the worker. Fields: "
    "integration, tenant, reason (rate, cooldown, concurrency, breaker_open, backoff, parked, "
    "recheck, yielded, backend_unavailable, contention), "
    "countdown, requeues.",
)
budget_exhausted: NamedSignal = _events.signal(
    "budget_exhausted",
    doc="A task used its whole requeue budget and fails with RequeueBudgetExhausted. Fields: "
    "integration, tenant, requeues.",
)


def emit(signal: NamedSignal, sender: object, **fields: Any) -> None:
    """Send ``signal`` to each receiver; a receiver's exception is logged, never raised.

    While a task runs (``queue_ratelimit.context``), ``task_name`` and ``task_id`` are
    added to the fields.
    """
    if not signal.receivers:
        return
    info = context.task.get()
    if info is not None:
        fields = {"task_name": info.name, "task_id": info.id, **fields}
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, **fields)
        except Exception:
            log.exception("queue_ratelimit: receiver %r of %s failed", receiver, signal.name)

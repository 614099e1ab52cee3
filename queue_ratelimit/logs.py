"""Structured log records for the decisions an operator cares about, built from the signals.

``install_logging()`` connects receivers that write one line per backoff, breaker
transition, exhausted budget and backend outage to the ``queue_ratelimit`` logger. A requeue
is always one INFO line, written by the task gate itself (``log_requeue``) to the worker's
logger, in place of the framework's own (Celery's "retry", Dramatiq's "skipped" warning). Each
record carries the event's fields in ``extra`` (``record.qrl_event``,
``record.qrl_integration``, ...) for a JSON formatter; the message itself is one readable
line. Fields never hold a token or a header: signals carry integration, tenant, timings and
reasons only.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterable
from typing import Any

from blinker import NamedSignal

from queue_ratelimit import signals

__all__ = ["install_logging", "log_requeue", "log_start", "uninstall_logging"]

_LEVELS: dict[str, int] = {
    "backoff": logging.INFO,
    "breaker_opened": logging.WARNING,
    "breaker_closed": logging.WARNING,
    "budget_exhausted": logging.ERROR,
    "quota_exhausted": logging.WARNING,
    "backend_unavailable": logging.ERROR,
    "backend_recovered": logging.WARNING,
    "override_set": logging.WARNING,
    "override_cleared": logging.WARNING,
}
_installed: list[tuple[NamedSignal, Callable[..., None]]] = []


def _line(event: str, fields: dict[str, Any]) -> str:
    target = fields.get("integration", "?")
    if fields.get("tenant"):
        target += f":{fields['tenant']}"
    task = f" task {fields['task_name']}[{fields['task_id']}]" if fields.get("task_id") else ""
    if event == "task_requeued":
        detail = (
            f"requeued for {fields['countdown']:.3f}s ({fields['reason']}, #{fields['requeues']})"
        )
    elif event == "backoff":
        after = fields.get("retry_after")
        detail = "backoff" + (f", retry after {after:.3f}s" if after is not None else "")
        detail += ", rate decreased" if fields.get("decreased") else ""
    elif event == "quota_exhausted":
        until = datetime.datetime.fromtimestamp(fields["until"], datetime.timezone.utc)
        detail = f"quota exhausted until {until:%Y-%m-%d %H:%M:%S} UTC (tasks parked until then)"
    elif event == "budget_exhausted":
        detail = f"requeue budget exhausted after {fields['requeues']} requeues"
    elif event == "backend_unavailable":
        detail = f"limiter backend unavailable, failing {fields['mode']}: {fields['error']}"
    elif event == "backend_recovered":
        detail = f"limiter backend recovered after {fields['down_for']:.1f}s"
    elif event == "override_set":
        bounds = [
            f"{name} {fields[name]:g}/s" for name in ("max_rate", "min_rate") if fields.get(name)
        ]
        detail = f"override set by {fields.get('by') or '?'}: {', '.join(bounds)}"
    elif event == "override_cleared":
        detail = f"override removed by {fields.get('by') or '?'}"
    else:
        detail = event.replace("_", " ") + (" by an operator" if fields.get("forced") else "")
    return f"queue_ratelimit {target}{task}: {detail}"


def log_requeue(logger: logging.Logger | logging.LoggerAdapter[Any], **fields: Any) -> None:
    """Write the one INFO line of a requeue (the ``task_requeued`` signal's fields)."""
    extra = {f"qrl_{key}": value for key, value in fields.items()}
    logger.info(_line("task_requeued", fields), extra={"qrl_event": "task_requeued", **extra})


def log_start(
    logger: logging.Logger | logging.LoggerAdapter[Any],
    backend: str,
    config: str,
    integrations: Iterable[str],
) -> None:
    """The one INFO line a worker writes when it starts: which shared state (never a
    password), which config layers and which integrations it gates."""
    names = ", ".join(sorted(set(integrations))) or "none yet"
    logger.info("queue_ratelimit: limiter on %s; config %s; gating %s", backend, config, names)


def install_logging(logger: logging.Logger | None = None) -> None:
    """Log requeues, backoffs, breaker transitions, exhausted budgets, backend outages and
    operators' overrides (idempotent)."""
    if _installed:
        return
    target = logger or logging.getLogger("queue_ratelimit")
    for name, level in _LEVELS.items():
        signal: NamedSignal = getattr(signals, name)

        def receiver(sender: object, _name: str = name, _level: int = level, **fields: Any) -> None:
            extra = {f"qrl_{key}": value for key, value in fields.items()}
            target.log(_level, _line(_name, fields), extra={"qrl_event": _name, **extra})

        signal.connect(receiver)
        _installed.append((signal, receiver))


def uninstall_logging() -> None:
    """Disconnect what ``install_logging`` connected."""
    while _installed:
        signal, receiver = _installed.pop()
        signal.disconnect(receiver)

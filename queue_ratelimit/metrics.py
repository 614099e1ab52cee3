"""Prometheus metrics: event counters fed by the signals, gauges read from the shared state.

Two halves, because a fleet has two kinds of truth:

* :class:`EventMetrics` counts what this process decided (acquisitions, throttles, requeues
  by reason, backoffs, exhausted budgets, breaker transitions) and times in-worker waits.
  Connect it in every worker process. Under Celery prefork or RQ's forking worker, set
  ``PROMETHEUS_MULTIPROC_DIR`` before the workers start: prometheus-client then writes each
  process's values to that directory and the exporter adds them up.
* :class:`StateCollector` reads the fleet-wide state from Redis at scrape time: current rate,
  tokens, tokens reserved, cooldown left, leases and breaker state per integration and tenant
  (at most ``max_tenants`` tenants per integration: a cardinality guard).

``queue-ratelimit exporter --redis URL --port N`` serves both (see :func:`serve`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from blinker import NamedSignal
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from queue_ratelimit import signals
from queue_ratelimit.backends import Backend
from queue_ratelimit.errors import BackendError
from queue_ratelimit.integrations.polling import PollLog
from queue_ratelimit.limiter import Limiter

__all__ = ["EventMetrics", "StateCollector", "serve"]

log = logging.getLogger(__name__)

_BREAKER = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
WAIT_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class EventMetrics:
    """Counters and a wait histogram fed by the signals of this process.

    Args:
        registry: where to register (prometheus-client's default registry when omitted).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
        self.acquired = Counter(
            "queue_ratelimit_acquired", "Calls granted a slot.", ["integration"], **kw
        )
        self.throttled = Counter(
            "queue_ratelimit_throttled", "Calls not granted.", ["integration", "reason"], **kw
        )
        self.requeued = Counter(
            "queue_ratelimit_requeued",
            "Tasks put back on the broker.",
            ["integration", "reason"],
            **kw,
        )
        self.backoffs = Counter(
            "queue_ratelimit_backoffs",
            "Backoff signals from the upstream.",
            ["integration", "decreased"],
            **kw,
        )
        self.budget_exhausted = Counter(
            "queue_ratelimit_budget_exhausted",
            "Tasks that used their whole requeue budget.",
            ["integration"],
            **kw,
        )
        self.breaker_transitions = Counter(
            "queue_ratelimit_breaker_transitions",
            "Breaker openings and closings.",
            ["integration", "state"],
            **kw,
        )
        self.wait = Histogram(
            "queue_ratelimit_wait_seconds",
            "Waits slept before a granted call.",
            ["integration"],
            buckets=WAIT_BUCKETS,
            **kw,
        )
        self._connected: list[tuple[NamedSignal, Callable[..., None]]] = []

    def connect(self) -> EventMetrics:
        """Start counting this process's signals; returns self."""

        def on_acquired(sender: object, **f: Any) -> None:
            self.acquired.labels(f["integration"]).inc()
            self.wait.labels(f["integration"]).observe(max(0.0, float(f["wait"])))

        handlers: dict[NamedSignal, Callable[..., None]] = {
            signals.acquired: on_acquired,
            signals.throttled: lambda s, **f: self.throttled.labels(
                f["integration"], f["reason"]
            ).inc(),
            signals.task_requeued: lambda s, **f: self.requeued.labels(
                f["integration"], f["reason"]
            ).inc(),
            signals.backoff: lambda s, **f: self.backoffs.labels(
                f["integration"], str(bool(f["decreased"])).lower()
            ).inc(),
            signals.budget_exhausted: lambda s, **f: self.budget_exhausted.labels(
                f["integration"]
            ).inc(),
            signals.breaker_opened: lambda s, **f: self.breaker_transitions.labels(
                f["integration"], "open"
            ).inc(),
            signals.breaker_closed: lambda s, **f: self.breaker_transitions.labels(
                f["integration"], "closed"
            ).inc(),
        }
        for signal, handler in handlers.items():
            signal.connect(handler, weak=False)
            self._connected.append((signal, handler))
        return self

    def disconnect(self) -> None:
        """Stop counting."""
        while self._connected:
            signal, handler = self._connected.pop()
            signal.disconnect(handler)


class StateCollector(Collector):
    """Gauges of every limiter key in Redis, read at scrape time.

    Args:
        limiter: a limiter over ``backend`` with the fleet's configuration.
        backend: the backend the workers share (any, through the ``Backend`` protocol).
        max_tenants: tenants reported per integration; the rest are counted in
            ``queue_ratelimit_tenants_not_reported``.
    """

    def __init__(self, limiter: Limiter, backend: Backend, max_tenants: int = 100) -> None:
        self.limiter = limiter
        self.backend = backend
        self.max_tenants = max_tenants
        self._trouble = PollLog(log, "exporter's read of the shared state", "scrapes say 0")

    def collect(self) -> Iterator[Metric]:
        """``queue_ratelimit_backend_up`` (1, or 0 when the shared state did not answer this
        scrape: the scrape still succeeds, with the per-process counters), then one family
        per gauge; labels ``integration`` and ``tenant`` ("" for none)."""
        up = GaugeMetricFamily(
            "queue_ratelimit_backend_up", "1 when the shared state answered this scrape."
        )
        try:
            keys, seen = self._keys()
            families = [*keys, *self._integrations(seen)]
        except BackendError as exc:  # one warning when it goes, one when it is back
            self._trouble.failed(exc)
            up.add_metric([], 0.0)
            yield up
            return
        self._trouble.succeeded()
        up.add_metric([], 1.0)
        yield up
        yield from families

    def _keys(self) -> tuple[list[Metric], dict[str, int]]:
        """The gauges of every key (``max_tenants`` tenants per integration), and how many
        tenants each integration has."""
        labels = ["integration", "tenant"]
        families = {
            "rate": GaugeMetricFamily("queue_ratelimit_rate", "Current AIMD rate.", labels=labels),
            "tokens": GaugeMetricFamily(
                "queue_ratelimit_tokens", "Tokens available.", labels=labels
            ),
            "reserved": GaugeMetricFamily(
                "queue_ratelimit_reserved", "Tokens owed to reservations.", labels=labels
            ),
            "cooldown": GaugeMetricFamily(
                "queue_ratelimit_cooldown_seconds", "Cooldown left.", labels=labels
            ),
            "leases": GaugeMetricFamily(
                "queue_ratelimit_leases", "Concurrency leases held.", labels=labels
            ),
        }
        seen: dict[str, int] = {}
        for name, tenant in self.backend.scan():
            if name not in self.limiter.configs or (tenant or "").startswith("#"):
                continue
            seen[name] = seen.get(name, 0) + 1
            if tenant is not None and seen[name] > self.max_tenants:
                continue
            snap = self.limiter.snapshot(name, tenant)
            key = [name, tenant or ""]
            families["rate"].add_metric(key, snap.limit().rate)
            families["tokens"].add_metric(key, snap.limit().tokens)
            families["reserved"].add_metric(key, snap.limit().reserved)
            families["cooldown"].add_metric(key, snap.cooldown_left)
            families["leases"].add_metric(key, snap.leases)
        return list(families.values()), seen

    def _integrations(self, seen: dict[str, int]) -> list[Metric]:
        """Each integration's breaker, tenants left out and fleet-wide event counts."""
        breaker = GaugeMetricFamily(
            "queue_ratelimit_breaker_state",
            "0 closed, 1 half-open, 2 open.",
            labels=["integration"],
        )
        dropped = GaugeMetricFamily(
            "queue_ratelimit_tenants_not_reported",
            "Tenants beyond max_tenants.",
            labels=["integration"],
        )
        events = CounterMetricFamily(
            "queue_ratelimit_fleet_events",
            "Fleet-wide counts from Redis (backoffs, requeues).",
            labels=["integration", "event"],
        )
        for name in sorted(self.limiter.configs):
            breaker.add_metric([name], _BREAKER.get(self.limiter.snapshot(name).breaker, 0.0))
            dropped.add_metric([name], max(0, seen.get(name, 0) - self.max_tenants))
            for event, total in sorted(self.limiter.stats(name).items()):
                events.add_metric([name, event], total)
        return [breaker, dropped, events]


def serve(
    limiter: Limiter,
    backend: Backend,
    port: int,
    addr: str = "0.0.0.0",
    multiprocess_dir: str | None = None,
) -> Any:
    """Serve ``/metrics``: the shared state, plus the workers' counters when
    ``multiprocess_dir`` (default ``$PROMETHEUS_MULTIPROC_DIR``) is set. Returns the server."""
    registry = CollectorRegistry()
    registry.register(StateCollector(limiter, backend))
    directory = multiprocess_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server

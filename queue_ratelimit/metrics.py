"""Prometheus metrics: event counters fed by the signals, gauges read from the shared state.

Two halves, because a fleet has two kinds of truth:

* :class:`EventMetrics` counts what this process decided (acquisitions, throttles, requeues
  by reason, backoffs, exhausted budgets, breaker transitions) and times in-worker waits.
  Connect it in every worker process. Under Celery prefork or RQ's forking worker, set
  ``PROMETHEUS_MULTIPROC_DIR`` before the workers start: prometheus-client then writes each
  process's values to that directory and the exporter adds them up.
* :class:`StateCollector` reads the fleet-wide state from Redis at scrape time: per
  integration its breaker, keys, events and tokens owed over all tenants; per key the rate,
  tokens, reservations, cooldown and leases of the integration-wide key and of the
  ``max_tenants`` busiest tenants (a cardinality guard).

``queue-ratelimit exporter --redis URL --port N`` serves both (see :func:`serve`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from blinker import NamedSignal
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from queue_ratelimit import signals
from queue_ratelimit.backends import Backend
from queue_ratelimit.errors import BackendError
from queue_ratelimit.inspection import (
    Activity,
    Key,
    KeyState,
    read_keys,
    tool_plan,
    totals,
)
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
    """Gauges of the limiter keys in the shared state, read at scrape time (``inspection``:
    the integrations of the local config and every one with keys, described by the local
    config or the plan its workers stored).

    Per integration: the breaker, its keys, their event counts and the tokens they owe, over
    all tenants. Per key: the integration-wide key and the ``max_tenants`` busiest tenants,
    busiest by requeues and 429s since the previous scrape, then tokens owed (a
    cardinality guard: the others are counted in ``queue_ratelimit_tenants_not_reported``).

    Args:
        limiter: a limiter over ``backend`` with the fleet's configuration (or none of it:
            the keys describe themselves).
        backend: the backend the workers share (any, through the ``Backend`` protocol).
        max_tenants: tenants reported per integration, the busiest.
    """

    def __init__(self, limiter: Limiter, backend: Backend, max_tenants: int = 100) -> None:
        if max_tenants < 0:
            raise ValueError("max_tenants must be >= 0")
        self.limiter = limiter
        self.backend = backend
        self.max_tenants = max_tenants
        self._trouble = PollLog(log, "exporter's read of the shared state", "scrapes say 0")
        self._activity = Activity()

    def collect(self) -> Iterator[Metric]:
        """``queue_ratelimit_backend_up`` (1, or 0 when the shared state did not answer this
        scrape: the scrape still succeeds, with the per-process counters), then one family
        per gauge; labels ``integration`` and ``tenant`` ("" for none)."""
        up = GaugeMetricFamily(
            "queue_ratelimit_backend_up", "1 when the shared state answered this scrape."
        )
        try:
            families = self._families()
        except BackendError as exc:  # one warning when it goes, one when it is back
            self._trouble.failed(exc)
            up.add_metric([], 0.0)
            yield up
            return
        self._trouble.succeeded()
        up.add_metric([], 1.0)
        yield up
        yield from families

    def _families(self) -> list[Metric]:
        keys = read_keys(self.limiter, self.backend)
        rates = self._activity.measure(keys)
        by_integration: dict[str, list[KeyState]] = {n: [] for n in self.limiter.configs}
        for state in keys:
            if state.snapshot is not None:  # (a key no plan describes is not measured)
                by_integration.setdefault(state.integration, []).append(state)
        gauges, totals = _Gauges(), _Totals()
        for name in sorted(by_integration):
            described = by_integration[name]
            reported = self._busiest(described, rates)
            for state in reported:
                gauges.add(state)
            totals.add(name, described, self._breaker(name, described), len(reported))
        return [*gauges.families(), *totals.families()]

    def _busiest(
        self, keys: list[KeyState], rates: Mapping[Key, Mapping[str, float]]
    ) -> list[KeyState]:
        """The integration-wide key and the ``max_tenants`` busiest tenants."""
        tenants = [state for state in keys if state.tenant is not None]

        def busy(state: KeyState) -> tuple[float, float]:
            recent = rates.get(state.key, {})
            return (recent.get("requeues", 0.0) + recent.get("backoffs", 0.0), state.owed)

        busiest = sorted(tenants, key=busy, reverse=True)[: self.max_tenants]
        return [state for state in keys if state.tenant is None] + busiest

    def _breaker(self, name: str, keys: list[KeyState]) -> str:
        if keys and keys[0].snapshot is not None:
            return keys[0].snapshot.breaker
        plan = tool_plan(self.limiter, self.backend, name)
        if plan is None:
            return "closed"
        return self.backend.snapshots(name, [None], plan)[0].breaker


class _Gauges:
    """The per-key gauge families."""

    LABELS = ("integration", "tenant")

    def __init__(self) -> None:
        def gauge(name: str, text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=list(self.LABELS))

        self.rate = gauge("queue_ratelimit_rate", "Current AIMD rate.")
        self.tokens = gauge("queue_ratelimit_tokens", "Tokens available.")
        self.reserved = gauge("queue_ratelimit_reserved", "Tokens owed to reservations.")
        self.cooldown = gauge("queue_ratelimit_cooldown_seconds", "Cooldown left.")
        self.leases = gauge("queue_ratelimit_leases", "Concurrency leases held.")

    def add(self, state: KeyState) -> None:
        snap = state.snapshot
        if snap is None or not snap.limits:
            return
        labels = [state.integration, state.tenant_name]
        primary = snap.limits[0]
        self.rate.add_metric(labels, primary.rate)
        self.tokens.add_metric(labels, primary.tokens)
        self.reserved.add_metric(labels, primary.reserved)
        self.cooldown.add_metric(labels, snap.cooldown_left)
        self.leases.add_metric(labels, snap.leases)

    def families(self) -> list[Metric]:
        return [self.rate, self.tokens, self.reserved, self.cooldown, self.leases]


class _Totals:
    """The per-integration families, over all its keys."""

    def __init__(self) -> None:
        labels = ["integration"]
        self.breaker = GaugeMetricFamily(
            "queue_ratelimit_breaker_state", "0 closed, 1 half-open, 2 open.", labels=labels
        )
        self.keys = GaugeMetricFamily(
            "queue_ratelimit_keys", "Live keys (the integration's and its tenants').", labels=labels
        )
        self.owed = GaugeMetricFamily(
            "queue_ratelimit_owed_tokens",
            "Tokens owed to reservations, over all keys.",
            labels=labels,
        )
        self.cooling = GaugeMetricFamily(
            "queue_ratelimit_keys_cooling_down", "Keys in a cooldown.", labels=labels
        )
        self.dropped = GaugeMetricFamily(
            "queue_ratelimit_tenants_not_reported",
            "Tenants beyond max_tenants (the busiest are reported).",
            labels=labels,
        )
        self.events = CounterMetricFamily(
            "queue_ratelimit_fleet_events",
            "Fleet-wide counts from the shared state (backoffs, requeues, budget_exhausted).",
            labels=["integration", "event"],
        )

    def add(self, name: str, keys: list[KeyState], breaker: str, reported: int) -> None:
        self.breaker.add_metric([name], _BREAKER.get(breaker, 0.0))
        self.keys.add_metric([name], len(keys))
        self.owed.add_metric([name], sum(state.owed for state in keys))
        cooling = sum(1 for s in keys if s.snapshot and s.snapshot.cooldown_left > 0)
        self.cooling.add_metric([name], cooling)
        self.dropped.add_metric([name], len(keys) - reported)
        for event, total in sorted(totals(keys).get(name, {}).items()):
            self.events.add_metric([name, event], total)

    def families(self) -> list[Metric]:
        return [self.breaker, self.keys, self.owed, self.cooling, self.dropped, self.events]


def serve(
    limiter: Limiter,
    backend: Backend,
    port: int,
    addr: str = "0.0.0.0",
    multiprocess_dir: str | None = None,
    max_tenants: int = 100,
) -> Any:
    """Serve ``/metrics``: the shared state (the ``max_tenants`` busiest tenants of each
    integration), plus the workers' counters when ``multiprocess_dir`` (default
    ``$PROMETHEUS_MULTIPROC_DIR``) is set. Returns the server."""
    registry = CollectorRegistry()
    registry.register(StateCollector(limiter, backend, max_tenants))
    directory = multiprocess_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server

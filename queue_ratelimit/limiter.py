"""The facade tasks and clients use: acquire before a call, report after it.

A ``Limiter`` ties integration configs to a backend and announces each decision on
``queue_ratelimit.signals``. It is cheap to share: one per process (or per Celery app).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from functools import partial

from queue_ratelimit.announce import announce_decision, announce_report
from queue_ratelimit.backends.base import Backend
from queue_ratelimit.backends.memory import MemoryBackend
from queue_ratelimit.config import APP_BACKOFFS, IntegrationConfig
from queue_ratelimit.errors import BackendUnavailable, ConfigError, InvalidRequest, RateLimited
from queue_ratelimit.hosts import (
    HOST_PREFIX,
    MAX_HOSTS,
    OTHER_HOSTS,
    host_config,
    host_integration,
)
from queue_ratelimit.limiter_reports import LimiterReports
from queue_ratelimit.limiter_tools import LimiterTools, check_name
from queue_ratelimit.outage import OutageGuard
from queue_ratelimit.outcome import Outcome, response_report
from queue_ratelimit.plans import Cost, Prepared, plan_for
from queue_ratelimit.policy.state import (
    BACKOFF,
    FAILURE,
    SUCCESS,
    AcquireRequest,
    Decision,
    Plan,
    Report,
    ReportResult,
    Reservation,
)
from queue_ratelimit.registry import BUILTIN_HOSTS, BUILTIN_INTEGRATIONS, get_integration


def _acquire(request: AcquireRequest, backend: Backend, plan: Plan) -> Decision:
    """``backend.acquire``, bound to its request with ``partial`` (cheaper than a closure)."""
    return backend.acquire(request, plan)


def _report(report: Report, backend: Backend, plan: Plan) -> ReportResult:
    return backend.report(report, plan)


def still_holds(seen: tuple[int, float] | None, decision: Decision) -> bool:
    """Whether a slot granted earlier holds, given the key's epoch and cooldown now (``seen``;
    None: unknown, the call goes as granted)."""
    return seen is None or (seen[0] == decision.epoch and seen[1] <= 0)


class Limiter(LimiterReports, LimiterTools):
    """Fleet-wide AIMD rate limits per integration and tenant.

    Args:
        backend: where state lives; ``MemoryBackend()`` (one process) when omitted, a
            ``RedisBackend`` to share limits across workers.
        configs: integration configs by name; the built-in registry when omitted. See
            ``queue_ratelimit.load_configs`` for TOML/JSON/environment overrides.
        sleep: how ``wait`` sleeps; inject one in tests.
        probe_interval: while the backend is unreachable, seconds between attempts to reach
            it; meanwhile each integration's ``on_backend_error`` decides (see
            ``queue_ratelimit.outage``).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        configs: Mapping[str, IntegrationConfig] | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        probe_interval: float = 2.0,
    ) -> None:
        self.backend: Backend = backend if backend is not None else MemoryBackend()
        if not callable(getattr(self.backend, "report", None)):  # the protocol before 0.2
            raise ConfigError(
                None,
                "backend",
                type(self.backend).__name__,
                "implements no report(report, plan): a backend decides acquire(request, plan) "
                "and applies report(report, plan) (see queue_ratelimit.backends.Backend)",
            )
        self._guard = OutageGuard(self.backend, probe_interval=probe_interval)
        self._configs = dict(configs if configs is not None else BUILTIN_INTEGRATIONS)
        self.configs: Mapping[str, IntegrationConfig] = self._configs
        self._sleep = sleep
        self._prepared: dict[str, Prepared] = {}
        self._hosts: Mapping[str, str] | None = None
        self._hosts_lock = threading.Lock()

    def for_host(self, host: str, port: int | None = None, scheme: str = "https") -> str:
        """The integration that limits calls to ``scheme://host:port``: the built-in one for
        that API host when this limiter has it (``api.github.com``: ``github``), a configured
        ``host-...`` one, else one made for the host now from ``hosts.host_config`` (see
        :mod:`queue_ratelimit.hosts`)."""
        if self._hosts is None:
            self._hosts = {h: n for h, n in BUILTIN_HOSTS.items() if n in self._configs}
        name = host_integration(host, port, scheme, self._hosts)
        if name in self._configs:
            return name
        with self._hosts_lock:  # copy on write: readers iterate a dict that never changes
            made = sum(1 for known in self._configs if known.startswith(HOST_PREFIX))
            if made >= MAX_HOSTS:
                name = OTHER_HOSTS
            if name not in self._configs:
                self._configs = {**self._configs, name: host_config(name)}
                self.configs = self._configs
        return name

    def config(self, integration: str) -> IntegrationConfig:
        """The config of ``integration``; ``ConfigError`` naming the known ones when absent."""
        return self._prepare(integration).config

    def costs(self, integration: str, cost: Cost) -> Mapping[str, float]:
        """``cost`` per limit, as ``acquire`` charges it; ``InvalidRequest`` if impossible."""
        return self._prepare(integration).costs(cost)

    def _prepare(self, integration: str) -> Prepared:
        prepared = self._prepared.get(integration)
        if prepared is None:
            check_name("integration", integration)
            config = get_integration(integration, self.configs)
            plan = plan_for(config)
            bursts = {lim.name: lim.burst for lim in plan.limits}
            prepared = self._prepared[integration] = Prepared(config, plan, bursts)
            note = getattr(self.backend, "note_plan", None)  # (how a chain's keys are named)
            if callable(note):
                note(integration, plan)
        return prepared

    def _resolve(self, integration: str, tenant: str | None) -> Prepared:
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise InvalidRequest(f"{integration}: tenant must be a non-empty string or None")
        if tenant is not None and not tenant.isascii():
            check_name("tenant", tenant)
        return self._prepare(integration)

    def acquire(
        self,
        integration: str,
        tenant: str | None = None,
        cost: Cost = 1.0,
        *,
        max_wait: float | None = None,
        reserve: bool = True,
        reservation: Reservation | None = None,
        cooldown_wait: float | None = None,
        max_sleepers: int | None = None,
        refusal_event: str | None = None,
        tokens: bool = False,
    ) -> Decision:
        """Ask for a slot; never sleeps.

        Returns a ``Decision``: granted (sleep ``wait`` first), or not granted with ``wait``
        until its slot. Granted means the slot is within ``max_wait`` (default: the
        integration's), and within ``max_sleepers`` places in line when given; during a
        cooldown, up to ``cooldown_wait`` of the cooldown is added (default: the
        integration's ``cooldown_wait``, which when unset is ``max_wait``). Beyond, the slot
        is reserved (when ``reserve``): pass ``decision.reservation`` back here when the
        requeued task returns, and it is granted without paying twice. A backoff voids
        earlier reservations; a void one is simply a fresh acquire. With ``refusal_event``
        a refusal adds one to that fleet-wide count (``stats``) in the same round trip.
        With ``tokens``, a grant answers each limit's tokens left (``Decision.tokens``).
        """
        prepared, request = self._acquire_request(
            integration,
            tenant,
            cost,
            max_wait,
            reserve,
            reservation,
            cooldown_wait,
            max_sleepers,
            refusal_event,
            tokens,
        )
        decision = self._guard.call(prepared, tenant, partial(_acquire, request))
        announce_decision(self, request, decision, cost)
        return decision

    def _acquire_request(
        self,
        integration: str,
        tenant: str | None,
        cost: Cost,
        max_wait: float | None,
        reserve: bool,
        reservation: Reservation | None,
        cooldown_wait: float | None,
        max_sleepers: int | None,
        refusal_event: str | None,
        tokens: bool = False,
    ) -> tuple[Prepared, AcquireRequest]:
        """An acquire's arguments as the backend takes them (the config's defaults filled)."""
        prepared = self._resolve(integration, tenant)
        config = prepared.config
        request = AcquireRequest(
            integration,
            tenant,
            prepared.costs(cost),
            config.max_wait if max_wait is None else max_wait,
            reserve,
            reservation,
            uuid.uuid4().hex if config.max_concurrent is not None else None,
            config.cooldown_wait if cooldown_wait is None else cooldown_wait,
            max_sleepers,
            refusal_event,
            tokens,
        )
        return prepared, request

    def wait(
        self,
        integration: str,
        tenant: str | None = None,
        cost: Cost = 1.0,
        *,
        timeout: float | None = None,
    ) -> Decision:
        """Acquire and sleep the computed wait (one call, no polling).

        Raises:
            RateLimited: when the slot is further than ``timeout``; nothing is reserved or
                paid then. Without a ``timeout``: further than the integration's
                ``max_wait``, or, during a cooldown, than its ``cooldown_wait`` plus
                ``max_wait`` (see ``acquire``).
        """
        decision = self.acquire(
            integration,
            tenant,
            cost,
            max_wait=timeout,
            reserve=False,
            cooldown_wait=None if timeout is None else 0.0,
        )
        if not decision.granted:
            raise RateLimited(decision.wait, integration, tenant)
        if decision.wait > 0:
            self._sleep(decision.wait)
        return decision

    def report(self, report: Report) -> ReportResult:
        """Apply a report (``on_success``, ``on_backoff`` and ``on_failure`` build it) and
        announce what it changed. While the backend is down and the integration fails
        closed, the report is dropped (the call was made; its answer still reaches the
        caller)."""
        prepared, closed = self._report_checked(report)
        result = self._guard.call(
            prepared, report.tenant, partial(_report, report), closed=closed, lease=report.lease_id
        )
        announce_report(self, report, result)
        return result

    def _report_checked(
        self, report: Report
    ) -> tuple[Prepared, Callable[[BackendUnavailable], ReportResult]]:
        """The report's integration, and the neutral result of a report dropped while the
        backend is down; ``InvalidRequest`` for a report that is none of the three kinds."""
        if report.kind not in (SUCCESS, BACKOFF, FAILURE):
            raise InvalidRequest(f"{report.integration}: a report is a success, backoff or failure")
        if report.level is not None and report.level not in APP_BACKOFFS:
            raise InvalidRequest(
                f"{report.integration}: a backoff's level is one of {APP_BACKOFFS}, not "
                f"{report.level!r}"
            )
        prepared = self._resolve(report.integration, report.tenant)
        rate = prepared.config.rate_limit_per_sec
        return prepared, lambda _error: ReportResult(0, False, rate, rate, 0.0)

    def report_response(
        self,
        integration: str,
        tenant: str | None,
        status: int | None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes | str | Mapping[str, object] | None = None,
        *,
        decision: Decision | None = None,
        estimated: Mapping[str, float] | None = None,
        actual: Mapping[str, float] | None = None,
    ) -> Outcome:
        """Report what the upstream answered, in one round trip; never raises on its content.

        The response is read with ``parse_rate_limit`` (the integration's
        ``backoff_status_codes``; waits up to ``max_quota_wait``) and reported as a backoff,
        a failure (a 5xx, or ``status=None`` for a timeout or connection error) or a success,
        with the quotas it published (``policy/quota.py``) and, when ``actual`` usage is given
        (or, with ``estimated``, the answer stated it: the dialect's ``cost_fields`` or a
        ``cost`` header), the correction of the ``estimated`` cost (up to the limit's burst).
        Pass the call's ``decision``: its epoch keeps one congestion event to one decrease,
        its seq corrects ``remaining`` for calls in flight, and its lease is given back.
        """
        prepared = self._resolve(integration, tenant)
        report, info = response_report(
            prepared, integration, tenant, status, headers, body, decision, estimated, actual
        )
        return Outcome(report.kind, info, self.report(report))

    def count(self, integration: str, event: str, tenant: str | None = None) -> None:
        """Add one to the key's fleet-wide count of ``event`` (``requeues``,
        ``budget_exhausted``); while the backend is down, the count is kept locally or
        dropped, never raised."""
        prepared = self._prepare(integration)
        self._guard.call(
            prepared,
            tenant,
            lambda backend, _plan: backend.count(integration, event, tenant),
            closed=lambda _error: None,
        )

    def holds(self, integration: str, tenant: str | None, decision: Decision) -> bool:
        """Whether a slot granted with a wait still holds once the caller slept it: no
        congestion event since it was granted (its epoch) and no cooldown running. A task
        that slept asks before its call: a backoff met meanwhile by another worker would
        otherwise be met again by each call sleeping at the time. True when the backend
        does not answer (the call goes as granted)."""
        prepared = self._resolve(integration, tenant)
        seen = self._guard.call(
            prepared,
            tenant,
            lambda backend, _plan: backend.check(integration, tenant),
            closed=lambda _error: None,
        )
        return still_holds(seen, decision)

    def release(self, integration: str, tenant: str | None, lease: str) -> bool:
        """Give a concurrency lease back without reporting an outcome (while the backend
        is down, once it answers again)."""
        prepared = self._resolve(integration, tenant)
        return self._guard.call(
            prepared,
            tenant,
            lambda backend, _plan: backend.release(integration, tenant, lease),
            closed=lambda _error: False,
            lease=lease,
        )

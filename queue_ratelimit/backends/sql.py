"""Limiter state in SQL tables: the decisions ``SQLiteBackend`` and ``PostgresBackend``
share.

Each decision and report is one transaction that loads a key's row (and its integration's
breaker, fair shares and overrides; with a chain, the integration-wide level's row),
applies the Python policy (``policy/steps.py``, the rules ``MemoryBackend`` runs) and writes
back what changed. The rows and what a store provides are in ``sql_rows.py``, the operators'
tools in ``sql_tools.py``.

The breaker is the integration's, shared by its keys, while a store may lock only the key's
row: a decision that changes the breaker writes it only if it is still what it read, else
the whole decision runs again, then with the integration's row locked too (after the keys'
rows, as every decision locks them), so it cannot conflict twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from queue_ratelimit.backends import state_json as sj
from queue_ratelimit.backends.redis_wire import plan_json
from queue_ratelimit.backends.sql_rows import (
    APP,
    KEY,
    Conflict,
    Loaded,
    column,
    read_stored,
    schema,
    tenant_of,
)
from queue_ratelimit.backends.sql_tools import SQLTools
from queue_ratelimit.errors import BackendError
from queue_ratelimit.policy import aimd, fair, steps
from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy.state import (
    SUCCESS,
    AcquireRequest,
    Decision,
    KeyState,
    Plan,
    Report,
    ReportResult,
    Snapshot,
)

__all__ = ["APP", "KEY", "Conflict", "Loaded", "SQLBackend", "column", "schema", "tenant_of"]

_T = TypeVar("_T")

CONFLICT_RETRIES = 5
"""Times a decision runs again when what it read changed under it (``Conflict``)."""


class SQLBackend(SQLTools):
    """The rules of a SQL store on its rows (see the module's docstring); a store adds its
    connections, transactions, locks and clock."""

    # -- decisions ------------------------------------------------------------------------------

    def _apply(
        self,
        integration: str,
        tenant: str | None,
        plan: Plan,
        step: Callable[
            [KeyState, brk.BreakerState, float, KeyState | None, fair.FairState | None, Plan],
            tuple[_T, bool],
        ],
        save_plan: bool = False,
    ) -> _T:
        """Run ``step`` in one transaction on the key's state, the breaker, and with a chain
        the integration-wide level's state and the fair shares; save what changed."""
        for attempt in range(CONFLICT_RETRIES):
            try:
                return self._apply_once(integration, tenant, plan, step, save_plan, attempt > 0)
            except Conflict:
                continue
        raise BackendError(
            f"{self.describe()}: the rows of {integration} kept changing under a decision"
        )

    def _apply_once(
        self,
        integration: str,
        tenant: str | None,
        given: Plan,  # (the config's: what the tools read back)
        step: Callable[
            [KeyState, brk.BreakerState, float, KeyState | None, fair.FairState | None, Plan],
            tuple[_T, bool],
        ],
        save_plan: bool,
        lock_integration: bool = False,
    ) -> _T:
        with self._tx() as conn:
            got = self._load(conn, integration, tenant, given.app is not None, lock_integration)
            now = got.now
            plan = self._bounded_plans.bounded(given, self._overrides_of(got.overrides), tenant)
            remember = self._remember_for
            state = steps.start(self._decode(got.key, integration, tenant), now, plan, remember)
            upper = None
            if plan.app is not None:
                entry = self._decode(got.app, integration, None)
                upper = steps.start(entry, now, plan.app, remember)
            breaker = read_stored(sj.breaker_from, got.breaker)
            shares = read_stored(sj.fair_from, got.fair) if plan.fair_share else None
            result, touched = step(state, breaker, now, upper, shares, plan)
            new_breaker = None if breaker.is_default else sj.breaker_text(breaker)
            if new_breaker != got.breaker and not self._set_breaker_if(
                conn, integration, got.breaker, new_breaker
            ):
                raise Conflict  # (rolled back: nothing of it is written)
            self._put(conn, integration, KEY, tenant, state, now)
            if upper is not None and touched:
                self._put(conn, integration, APP, None, upper, now)
            columns: dict[str, Any] = {}
            if shares is not None:
                columns["fair"] = sj.fair_text(shares)
            wrote_plan = save_plan and (
                got.plan is None or self._plans_written.get(integration) is not given
            )
            if wrote_plan:  # (again when another process purged it)
                columns["plan"] = plan_json(given, self._idle_ttl)
            if columns:
                self._put_integration(conn, integration, **columns)
        if wrote_plan:  # (once committed)
            self._plans_written[integration] = given
        return result

    def acquire(self, request: AcquireRequest, plan: Plan) -> Decision:
        """See ``Backend.acquire``; with ``claim_ahead``, from the slots this process claimed
        (``sql_claims.py``) when it has some left."""
        claims = self._claims
        if claims is None or not steps.claimable(plan, request):
            return self._apply(
                request.integration,
                request.tenant,
                plan,
                lambda state, breaker, now, upper, shares, bounded: steps.acquire(
                    state, breaker, now, upper, shares, bounded, request, self._idle_ttl
                ),
                save_plan=True,
            )
        taken = claims.take(request)
        if taken is not None:
            return taken
        most, ahead = claims.size(request), claims.ahead
        decisions = self._apply(
            request.integration,
            request.tenant,
            plan,
            lambda state, breaker, now, _upper, _shares, bounded: (
                steps.claim(state, breaker, now, bounded, request, self._idle_ttl, most, ahead),
                False,
            ),
            save_plan=True,
        )
        claims.keep(request, decisions)
        return decisions[0]

    def report(self, report: Report, plan: Plan) -> ReportResult:
        """See ``Backend.report``; a backoff or a failure drops the slots this process
        claimed for the integration."""
        if self._claims is not None and report.kind != SUCCESS:
            self._claims.drop(report.integration)
        return self._apply(
            report.integration,
            report.tenant,
            plan,
            lambda state, breaker, now, upper, _shares, bounded: steps.report(
                state, breaker, now, upper, bounded, report
            ),
        )

    def _rewrite(
        self, integration: str, tenant: str | None, change: Callable[[KeyState], bool]
    ) -> bool:
        """Apply ``change`` to a live key's state and write it back, its expiry as it was
        (a lease given back, a count: no use of the key); whether it changed it."""
        with self._tx() as conn:
            entry = self._entry(conn, integration, KEY, tenant, lock=True)
            now = self._now(conn)  # (once the row is held: a wait for it is not a use)
            if entry is None or entry[1] <= now or not change(entry[0]):
                return False
            self._exec(
                conn,
                "UPDATE qrl_keys SET state = ?"
                " WHERE scope = ? AND integration = ? AND level = ? AND tenant = ?",
                (sj.state_text(entry[0]), self.prefix, integration, KEY, column(tenant)),
            )
            return True

    def release(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """See ``Backend.release``."""
        return self._rewrite(integration, tenant, lambda state: aimd.release(state, lease_id))

    def count(self, integration: str, event: str, tenant: str | None = None) -> None:
        """See ``Backend.count``."""

        def bump(state: KeyState) -> bool:
            steps.bump(state, event)
            return True

        self._rewrite(integration, tenant, bump)

    def check(self, integration: str, tenant: str | None) -> tuple[int, float] | None:
        """See ``Backend.check``."""
        with self._tx(write=False) as conn:
            now = self._now(conn)
            state = self._live(conn, integration, KEY, tenant, now)
            if state is None:
                return None
            until = state.cooldown_until
            upper = self._live(conn, integration, APP, None, now)
            if upper is not None:
                until = max(until, upper.cooldown_until)
            return state.epoch, max(0.0, until - now)

    # -- asyncio: the same calls in a thread (a busy database must not block the loop) --------

    async def aacquire(self, request: AcquireRequest, plan: Plan) -> Decision:
        claims = self._claims  # (a slot claimed already: no thread)
        if claims is not None and steps.claimable(plan, request):
            taken = claims.take(request)
            if taken is not None:
                return taken
        return await asyncio.to_thread(self.acquire, request, plan)

    async def areport(self, report: Report, plan: Plan) -> ReportResult:
        return await asyncio.to_thread(self.report, report, plan)

    async def arelease(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        return await asyncio.to_thread(self.release, integration, tenant, lease_id)

    async def acheck(self, integration: str, tenant: str | None) -> tuple[int, float] | None:
        return await asyncio.to_thread(self.check, integration, tenant)

    async def acount(self, integration: str, event: str, tenant: str | None = None) -> None:
        await asyncio.to_thread(self.count, integration, event, tenant)

    async def asnapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        return await asyncio.to_thread(self.snapshot, integration, tenant, plan)

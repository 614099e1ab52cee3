"""Limiter state in SQL tables: what ``SQLiteBackend`` and ``PostgresBackend`` share.

Each decision and report is one transaction that loads a key's row (and its integration's
breaker, fair shares and overrides; with a chain, the integration-wide level's row),
applies the Python policy (``policy/steps.py``, the rules ``MemoryBackend`` runs) and writes
back what changed. A store says how it opens a transaction, locks the rows it loads and
tells the time (``_tx``, ``_load``, ``_now``); the rest is here, in SQL that both speak
(``?`` placeholders; a store whose driver wants others rewrites them in ``_sql``).

Rows, all under a ``scope`` (the key prefix, ``qrl`` by default):

* ``qrl_keys``: a key's state as JSON (``state_json``), ``level`` 0 for an integration's or
  tenant's key, 1 for a chain's integration-wide level, and ``expires``: the key's idle
  expiry, after which it is only remembered (``remember_for`` more seconds; a sweep every
  ``SWEEP_EVERY`` writes of a process deletes what is past that);
* ``qrl_integrations``: per integration, its breaker, its tenants' fair shares and the plan
  its workers last decided with (``status`` reads it);
* ``qrl_overrides``: the operators' run-time bounds (``queue-ratelimit set``), read in each
  decision's transaction, so every process's next decision obeys a change.

The breaker is the integration's, shared by its keys, while a store may lock only the key's
row: a decision that changes the breaker writes it only if it is still what it read, else
the whole decision runs again, then with the integration's row locked too (after the keys'
rows, as every decision locks them), so it cannot conflict twice.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from queue_ratelimit.backends import state_json as sj
from queue_ratelimit.backends.base import check_lifetimes
from queue_ratelimit.backends.redis_wire import plan_from_json, plan_json
from queue_ratelimit.errors import BackendError
from queue_ratelimit.policy import aimd, fair, steps
from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy.overrides import BoundedPlans, Override
from queue_ratelimit.policy.state import (
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
_S = TypeVar("_S")
log = logging.getLogger(__name__)

KEY, APP = 0, 1
"""``qrl_keys.level``: a key (an integration's or a tenant's), a chain's integration-wide level."""

SWEEP_EVERY = 1024
"""Writes between two sweeps of the rows past what they remember."""

CONFLICT_RETRIES = 5
"""Times a decision runs again when what it read changed under it (``Conflict``)."""

Row = tuple[str, float] | None
"""A key's stored ``(state JSON, expires)``."""


def schema(*, integer: str, real: str, suffix: str = "") -> tuple[str, ...]:
    """The tables every statement here reads and writes, in a dialect's column types
    (``suffix`` ends each ``CREATE TABLE``); each statement is idempotent."""
    return (
        f"""CREATE TABLE IF NOT EXISTS qrl_keys (
        scope TEXT NOT NULL, integration TEXT NOT NULL, level {integer} NOT NULL,
        tenant TEXT NOT NULL, state TEXT NOT NULL, expires {real} NOT NULL,
        PRIMARY KEY (scope, integration, level, tenant)){suffix}""",
        "CREATE INDEX IF NOT EXISTS qrl_keys_expires ON qrl_keys (scope, expires)",
        f"""CREATE TABLE IF NOT EXISTS qrl_integrations (
        scope TEXT NOT NULL, integration TEXT NOT NULL, breaker TEXT, fair TEXT, plan TEXT,
        PRIMARY KEY (scope, integration)){suffix}""",
        f"""CREATE TABLE IF NOT EXISTS qrl_overrides (
        scope TEXT NOT NULL, integration TEXT NOT NULL, tenant TEXT NOT NULL,
        body TEXT NOT NULL, PRIMARY KEY (scope, integration, tenant)){suffix}""",
    )


def column(tenant: str | None) -> str:
    """A tenant as stored: ``""`` for none, ``=T`` for tenant T (``""`` is a tenant too)."""
    return "" if tenant is None else "=" + tenant


def tenant_of(stored: str) -> str | None:
    return stored[1:] if stored else None


def _read(decode: Callable[[str | None], _S], text: str | None) -> _S:
    """An integration's breaker or fair shares; a damaged one starts afresh (logged)."""
    try:
        return decode(text)
    except ValueError as exc:
        log.warning("queue_ratelimit: an unreadable row starts afresh: %s", exc)
        return decode(None)


@dataclass
class Loaded:
    """What one decision reads, in its transaction (rows locked as the store locks them)."""

    now: float
    key: Row
    app: Row
    breaker: str | None
    fair: str | None
    plan: str | None
    overrides: list[tuple[str, str]]


class Conflict(Exception):
    """The integration's breaker changed under the decision: it runs again."""


class SQLBackend(abc.ABC):
    """The rows and rules of a SQL store (see the module's docstring); a store adds its
    connections, transactions, locks and clock."""

    prefix: str
    lock_rows = ""
    """What a ``SELECT`` ends with to lock the rows it reads until the transaction ends
    (a store that locks the whole database for a write transaction needs nothing)."""

    def __init__(
        self,
        *,
        prefix: str,
        idle_ttl: float,
        remember_for: float,
        clock: Callable[[], float] | None,
    ) -> None:
        check_lifetimes(idle_ttl, remember_for)
        self.prefix = prefix
        self._idle_ttl = idle_ttl
        self._remember_for = remember_for
        self._clock = clock
        self._bounded_plans = BoundedPlans()
        self._plans_written: dict[str, Plan] = {}
        self._writes = 0

    # -- what a store provides ------------------------------------------------------------------

    @abc.abstractmethod
    def _tx(self, write: bool = True) -> contextlib.AbstractContextManager[Any]:
        """One transaction, committed when the block ends, rolled back when it raises; the
        driver's errors raised as ``BackendError``."""

    def _now(self, conn: Any) -> float:
        """The time every process sharing the store agrees on, seconds (the clock given;
        a store whose server keeps the time reads it when none is)."""
        assert self._clock is not None
        return self._clock()

    @abc.abstractmethod
    def create_schema(self) -> None:
        """Create the tables when missing (idempotent; ``queue-ratelimit migrate`` runs it)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """See ``Backend.describe``."""

    def _sql(self, statement: str) -> str:
        """``statement`` in the driver's placeholders (written with ``?``)."""
        return statement

    def _exec(self, conn: Any, statement: str, args: Sequence[Any] = ()) -> Any:
        return conn.execute(self._sql(statement), tuple(args))

    def _load(
        self,
        conn: Any,
        integration: str,
        tenant: str | None,
        chained: bool,
        lock_integration: bool = False,
    ) -> Loaded:
        """The decision's rows: the key's and, ``chained``, the integration-wide level's,
        each locked against other writers of it (and ``lock_integration``, the
        integration's row after them); the integration's row and overrides."""
        now = self._now(conn)
        app = self._row(conn, integration, APP, None) if chained else None
        breaker, fair_text, plan_text = self._integration_row(conn, integration)
        return Loaded(
            now,
            self._row(conn, integration, KEY, tenant),
            app,
            breaker,
            fair_text,
            plan_text,
            self._override_rows(conn, integration),
        )

    def _set_breaker_if(
        self, conn: Any, integration: str, was: str | None, text: str | None
    ) -> bool:
        """Write the integration's breaker if it is still ``was``; whether it was. Here
        written as it is: a store whose write transactions lock the whole database has
        the breaker as read (a store that locks rows checks)."""
        self._put_integration(conn, integration, breaker=text)
        return True

    # -- rows ---------------------------------------------------------------------------------

    def _row(
        self, conn: Any, integration: str, level: int, tenant: str | None, lock: bool = False
    ) -> Row:
        row = self._exec(
            conn,
            "SELECT state, expires FROM qrl_keys"
            " WHERE scope = ? AND integration = ? AND level = ? AND tenant = ?"
            + (self.lock_rows if lock else ""),
            (self.prefix, integration, level, column(tenant)),
        ).fetchone()
        return None if row is None else (row[0], float(row[1]))

    def _decode(
        self, row: Row, integration: str, tenant: str | None
    ) -> tuple[KeyState, float] | None:
        if row is None or not row[0]:  # (none, or a row a store inserted to lock it)
            return None
        try:
            return sj.state_from(row[0]), row[1]
        except ValueError as exc:  # (a damaged row: the key starts afresh, as a lost one)
            log.warning(
                "queue_ratelimit: %s: the state of %s is unreadable and starts afresh: %s",
                self.describe(),
                integration if tenant is None else f"{integration}:{tenant}",
                exc,
            )
            return None

    def _entry(
        self, conn: Any, integration: str, level: int, tenant: str | None, lock: bool = False
    ) -> tuple[KeyState, float] | None:
        row = self._row(conn, integration, level, tenant, lock)
        return self._decode(row, integration, tenant)

    def _live(
        self, conn: Any, integration: str, level: int, tenant: str | None, now: float
    ) -> KeyState | None:
        entry = self._entry(conn, integration, level, tenant)
        return entry[0] if entry is not None and entry[1] > now else None

    def _put(
        self,
        conn: Any,
        integration: str,
        level: int,
        tenant: str | None,
        state: KeyState,
        now: float,
    ) -> None:
        expires = now + aimd.idle_expiry(state, now, self._idle_ttl)
        self._exec(
            conn,
            "INSERT INTO qrl_keys (scope, integration, level, tenant, state, expires)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, integration, level, tenant)"
            " DO UPDATE SET state = excluded.state, expires = excluded.expires",
            (self.prefix, integration, level, column(tenant), sj.state_text(state), expires),
        )
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            self._sweep(conn, now)

    def _sweep(self, conn: Any, now: float) -> None:
        """Delete the rows past what they remember."""
        self._exec(
            conn,
            "DELETE FROM qrl_keys WHERE scope = ? AND expires <= ?",
            (self.prefix, now - self._remember_for),
        )

    def _integration_row(
        self, conn: Any, integration: str
    ) -> tuple[str | None, str | None, str | None]:
        row = self._exec(
            conn,
            "SELECT breaker, fair, plan FROM qrl_integrations WHERE scope = ? AND integration = ?",
            (self.prefix, integration),
        ).fetchone()
        return (None, None, None) if row is None else (row[0], row[1], row[2])

    def _put_integration(self, conn: Any, integration: str, **columns: Any) -> None:
        names = list(columns)
        self._exec(
            conn,
            f"INSERT INTO qrl_integrations (scope, integration, {', '.join(names)})"
            f" VALUES (?, ?, {', '.join('?' for _ in names)})"
            " ON CONFLICT (scope, integration) DO UPDATE SET "
            + ", ".join(f"{n} = excluded.{n}" for n in names),
            (self.prefix, integration, *columns.values()),
        )

    def _override_rows(self, conn: Any, integration: str) -> list[tuple[str, str]]:
        return [
            (row[0], row[1])
            for row in self._exec(
                conn,
                "SELECT tenant, body FROM qrl_overrides WHERE scope = ? AND integration = ?",
                (self.prefix, integration),
            ).fetchall()
        ]

    @staticmethod
    def _overrides_of(rows: Sequence[tuple[str, str]]) -> dict[str | None, Override]:
        held: dict[str | None, Override] = {}
        for tenant, body in rows:
            override = Override.from_json(body)
            if override is not None:
                held[tenant_of(tenant)] = override
        return held

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
            breaker = _read(sj.breaker_from, got.breaker)
            shares = _read(sj.fair_from, got.fair) if plan.fair_share else None
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
        """See ``Backend.acquire``."""
        return self._apply(
            request.integration,
            request.tenant,
            plan,
            lambda state, breaker, now, upper, shares, bounded: steps.acquire(
                state, breaker, now, upper, shares, bounded, request, self._idle_ttl
            ),
            save_plan=True,
        )

    def report(self, report: Report, plan: Plan) -> ReportResult:
        """See ``Backend.report``."""
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

    # -- inspection and operators' tools ----------------------------------------------------------

    def _breaker(self, conn: Any, integration: str) -> brk.BreakerState:
        return _read(sj.breaker_from, self._integration_row(conn, integration)[0])

    def snapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        """See ``Backend.snapshot``."""
        with self._tx(write=False) as conn:
            now = self._now(conn)
            held = self._overrides_of(self._override_rows(conn, integration))
            plan = self._bounded_plans.bounded(plan, held, tenant)
            state = self._live(conn, integration, KEY, tenant, now)
            return aimd.snapshot(state, self._breaker(conn, integration), now, plan.limits)

    def app_snapshot(self, integration: str, plan: Plan) -> Snapshot:
        """See ``Backend.app_snapshot``."""
        assert plan.app is not None
        with self._tx(write=False) as conn:
            now = self._now(conn)
            state = self._live(conn, integration, APP, None, now)
            return aimd.snapshot(state, self._breaker(conn, integration), now, plan.app.limits)

    def snapshots(
        self, integration: str, tenants: Sequence[str | None], plan: Plan
    ) -> list[Snapshot]:
        """See ``Backend.snapshots``."""
        with self._tx(write=False) as conn:
            now = self._now(conn)
            breaker = self._breaker(conn, integration)
            return [
                aimd.snapshot(
                    self._live(conn, integration, KEY, tenant, now), breaker, now, plan.limits
                )
                for tenant in tenants
            ]

    def scan(self, integration: str | None = None) -> Iterator[tuple[str, str | None]]:
        """Every live key, of ``integration`` only when given."""
        query = "SELECT integration, tenant FROM qrl_keys WHERE scope = ? AND level = ?"
        query += " AND expires > ? AND state <> ''"
        with self._tx(write=False) as conn:
            args: tuple[Any, ...] = (self.prefix, KEY, self._now(conn))
            if integration is not None:
                query += " AND integration = ?"
                args += (integration,)
            rows = self._exec(conn, query + " ORDER BY integration, tenant", args).fetchall()
        return iter([(name, tenant_of(tenant)) for name, tenant in rows])

    def stats(self, integration: str) -> dict[str, int]:
        """See ``Backend.stats``."""
        totals: dict[str, int] = {}
        with self._tx(write=False) as conn:
            rows = self._exec(
                conn,
                "SELECT state FROM qrl_keys"
                " WHERE scope = ? AND integration = ? AND level = ? AND expires > ?",
                (self.prefix, integration, KEY, self._now(conn)),
            ).fetchall()
        for (text,) in rows:
            with contextlib.suppress(ValueError):  # (a damaged row counts nothing)
                for event, value in sj.state_from(text).counts.items():
                    totals[event] = totals.get(event, 0) + value
        return totals

    def stored_plan(self, integration: str) -> Plan | None:
        """See ``Backend.stored_plan``."""
        with self._tx(write=False) as conn:
            text = self._integration_row(conn, integration)[2]
        if text is None:
            return None
        try:
            return plan_from_json(text)
        except ValueError:
            return None

    def reset(self, integration: str, tenant: str | None) -> None:
        """See ``Backend.reset``."""
        with self._tx() as conn:
            where = (self.prefix, integration)
            self._exec(
                conn,
                "DELETE FROM qrl_keys WHERE scope = ? AND integration = ? AND level = ?"
                " AND tenant = ?",
                (*where, KEY, column(tenant)),
            )
            if tenant is None:  # (with a chain's integration-wide level and fair shares)
                self._exec(
                    conn,
                    "DELETE FROM qrl_keys WHERE scope = ? AND integration = ? AND level = ?",
                    (*where, APP),
                )
                self._exec(
                    conn,
                    "UPDATE qrl_integrations SET fair = NULL WHERE scope = ? AND integration = ?",
                    where,
                )

    def purge(self, integration: str) -> None:
        """See ``Backend.purge``."""
        with self._tx() as conn:
            if self.lock_rows:  # (the keys' rows in the order decisions lock them)
                self._exec(
                    conn,
                    "SELECT 1 FROM qrl_keys WHERE scope = ? AND integration = ?"
                    " ORDER BY level, tenant" + self.lock_rows,
                    (self.prefix, integration),
                ).fetchall()
            for table in ("qrl_keys", "qrl_integrations", "qrl_overrides"):
                self._exec(
                    conn,
                    f"DELETE FROM {table} WHERE scope = ? AND integration = ?",
                    (self.prefix, integration),
                )
        self._plans_written.pop(integration, None)

    def set_breaker(self, integration: str, state: str, open_seconds: float) -> None:
        """See ``Backend.set_breaker``."""
        with self._tx() as conn:
            breaker = brk.force(state, self._now(conn), open_seconds)
            text = None if breaker.is_default else sj.breaker_text(breaker)
            self._put_integration(conn, integration, breaker=text)

    def set_override(self, integration: str, tenant: str | None, override: Override | None) -> None:
        """See ``Backend.set_override``."""
        with self._tx() as conn:
            key = (self.prefix, integration, column(tenant))
            if override is None:
                self._exec(
                    conn,
                    "DELETE FROM qrl_overrides WHERE scope = ? AND integration = ? AND tenant = ?",
                    key,
                )
            else:
                self._exec(
                    conn,
                    "INSERT INTO qrl_overrides (scope, integration, tenant, body)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (scope, integration, tenant)"
                    " DO UPDATE SET body = excluded.body",
                    (*key, override.to_json()),
                )

    def overrides(self, integration: str) -> dict[str | None, Override]:
        """See ``Backend.overrides``."""
        with self._tx(write=False) as conn:
            return self._overrides_of(self._override_rows(conn, integration))

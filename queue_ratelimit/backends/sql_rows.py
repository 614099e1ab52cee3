"""Limiter state in SQL tables: the rows ``SQLiteBackend`` and ``PostgresBackend`` share,
and what a store provides (``SQLRows``). The decisions on them are in ``sql.py``, the
operators' tools in ``sql_tools.py``.

A store says how it opens a transaction, locks the rows it loads and tells the time
(``_tx``, ``_load``, ``_now``); the rest is here, in SQL that both speak (``?``
placeholders; a store whose driver wants others rewrites them in ``_sql``).

Rows, all under a ``scope`` (the key prefix, ``qrl`` by default):

* ``qrl_keys``: a key's state as JSON (``state_json``), ``level`` 0 for an integration's or
  tenant's key, 1 for a chain's integration-wide level, and ``expires``: the key's idle
  expiry, after which it is only remembered (``remember_for`` more seconds; a sweep every
  ``SWEEP_EVERY`` writes of a process deletes what is past that);
* ``qrl_integrations``: per integration, its breaker, its tenants' fair shares and the plan
  its workers last decided with (``status`` reads it);
* ``qrl_overrides``: the operators' run-time bounds (``queue-ratelimit set``), read in each
  decision's transaction, so every process's next decision obeys a change.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from queue_ratelimit.backends import state_json as sj
from queue_ratelimit.backends.base import check_lifetimes
from queue_ratelimit.backends.sql_claims import Claims, check_claim_ahead
from queue_ratelimit.policy import aimd
from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy.overrides import BoundedPlans, Override
from queue_ratelimit.policy.state import KeyState, Plan

__all__ = [
    "APP",
    "KEY",
    "Conflict",
    "Loaded",
    "SQLRows",
    "column",
    "read_stored",
    "schema",
    "tenant_of",
]

_T = TypeVar("_T")
_S = TypeVar("_S")
log = logging.getLogger(__name__)

KEY, APP = 0, 1
"""``qrl_keys.level``: a key (an integration's or a tenant's), a chain's integration-wide level."""

SWEEP_EVERY = 1024
"""Writes between two sweeps of the rows past what they remember."""

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


def read_stored(decode: Callable[[str | None], _S], text: str | None) -> _S:
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


class SQLRows(abc.ABC):
    """The rows of a SQL store (see the module's docstring); a store adds its connections,
    transactions, locks and clock."""

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
        claim_ahead: float = 0.0,
    ) -> None:
        check_lifetimes(idle_ttl, remember_for)
        ahead = check_claim_ahead(claim_ahead)
        self._claims = Claims(ahead, clock) if ahead > 0 else None
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

    def _breaker(self, conn: Any, integration: str) -> brk.BreakerState:
        return read_stored(sj.breaker_from, self._integration_row(conn, integration)[0])

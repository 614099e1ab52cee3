"""Limiter state in a SQLite file: several processes on one host share it, no server needed.

Each decision and report is one ``BEGIN IMMEDIATE`` transaction that reads the key's row (and
its integration's breaker, fair shares and overrides), applies the Python policy
(``policy/steps.py``, the rules ``MemoryBackend`` runs) and writes back what changed. The
database is in WAL mode, so readers (``status``, the exporter) never wait for writers;
writers queue on SQLite's lock, each for at most ``busy_timeout`` seconds, after which the
call raises ``BackendError`` and the limiter's outage policy decides (``docs/outages.md``).

Rows, all under a ``scope`` (the key prefix, ``qrl`` by default):

* ``qrl_keys``: a key's state as JSON (``state_json``), ``level`` 0 for an integration's or
  tenant's key, 1 for a chain's integration-wide level, and ``expires``: the key's idle
  expiry, after which it is only remembered (``remember_for`` more seconds; a sweep every
  ``SWEEP_EVERY`` writes deletes what is past that);
* ``qrl_integrations``: per integration, its breaker, its tenants' fair shares and the plan
  its workers last decided with (``status`` reads it);
* ``qrl_overrides``: the operators' run-time bounds (``queue-ratelimit set``), read in each
  decision's transaction, so every process's next decision obeys a change.

Time is this host's clock (``time.time``): the processes sharing a file share it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from queue_ratelimit.backends import state_json as sj
from queue_ratelimit.backends.base import REMEMBER_FOR, check_lifetimes
from queue_ratelimit.backends.redis_wire import plan_from_json, plan_json
from queue_ratelimit.errors import BackendError, ConfigError
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

__all__ = ["SCHEMA", "SQLiteBackend"]

_T = TypeVar("_T")
_S = TypeVar("_S")
log = logging.getLogger(__name__)

KEY, APP = 0, 1
"""``qrl_keys.level``: a key (an integration's or a tenant's), a chain's integration-wide level."""

SWEEP_EVERY = 1024
"""Writes between two sweeps of the rows past what they remember."""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS qrl_keys (
        scope TEXT NOT NULL, integration TEXT NOT NULL, level INTEGER NOT NULL,
        tenant TEXT NOT NULL, state TEXT NOT NULL, expires REAL NOT NULL,
        PRIMARY KEY (scope, integration, level, tenant)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS qrl_keys_expires ON qrl_keys (scope, expires)",
    """CREATE TABLE IF NOT EXISTS qrl_integrations (
        scope TEXT NOT NULL, integration TEXT NOT NULL, breaker TEXT, fair TEXT, plan TEXT,
        PRIMARY KEY (scope, integration)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS qrl_overrides (
        scope TEXT NOT NULL, integration TEXT NOT NULL, tenant TEXT NOT NULL,
        body TEXT NOT NULL, PRIMARY KEY (scope, integration, tenant)) WITHOUT ROWID""",
)
"""The tables (``create_schema`` runs these; each is idempotent)."""


_INHERITED: list[sqlite3.Connection] = []
"""Connections a forked child inherited: kept, never used or closed there."""


def _read(decode: Callable[[str | None], _S], text: str | None) -> _S:
    """An integration's breaker or fair shares; a damaged one starts afresh (logged)."""
    try:
        return decode(text)
    except ValueError as exc:
        log.warning("queue_ratelimit: an unreadable row starts afresh: %s", exc)
        return decode(None)


def _column(tenant: str | None) -> str:
    """A tenant as stored: ``""`` for none, ``=T`` for tenant T (``""`` is a tenant too)."""
    return "" if tenant is None else "=" + tenant


def _tenant(column: str) -> str | None:
    return column[1:] if column else None


class SQLiteBackend:
    """Keeps every key in a SQLite file that the processes of one host share.

    Args:
        path: the database file (created with its tables when missing); ``":memory:"`` is
            refused (each connection would have a database of its own).
        prefix: the scope of every row, like a Redis key prefix.
        idle_ttl: a key with no debt and no cooldown is forgotten this long after last use.
        remember_for: seconds past that for which what the key learned is kept.
        busy_timeout: the longest a call waits for another process's transaction, seconds;
            then it raises ``BackendError`` and the outage policy holds.
        clock: the current time in seconds (tests inject a fake one).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        prefix: str = "qrl",
        idle_ttl: float = 3600.0,
        remember_for: float = REMEMBER_FOR,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_lifetimes(idle_ttl, remember_for)
        path = os.fspath(path)
        if not path or path == ":memory:" or path.startswith("file::memory:"):
            raise ConfigError(None, "path", path, "must name a file the processes share")
        if not (isinstance(busy_timeout, int | float) and busy_timeout > 0):
            raise ConfigError(None, "busy_timeout", busy_timeout, "must be a number of seconds > 0")
        self.path = path
        self.prefix = prefix
        self._idle_ttl = idle_ttl
        self._remember_for = remember_for
        self._busy_timeout = float(busy_timeout)
        self._clock = clock
        self._local = threading.local()
        self._bounded_plans = BoundedPlans()
        self._plans_written: dict[str, Plan] = {}
        self._writes = 0
        self._schema_known = False  # (the file is not opened before the first call)

    # -- connections and transactions ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection: opened at its first call (a forked child opens its own
        and leaves the one it inherited alone: closing it would close the parent's), with
        the tables created when the file has none."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        if conn is not None:
            _INHERITED.append(conn)  # (never closed in this process)
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            mode = self._wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            if not self._schema_known:
                found = conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
                    " ('qrl_keys', 'qrl_integrations', 'qrl_overrides')"
                ).fetchone()[0]
                if found < 3:
                    self._create(conn)
                self._schema_known = True
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite {self.path}: {exc}") from exc
        if str(mode).lower() != "wal":
            log.warning(
                "queue_ratelimit: %s is in %s journal mode, not WAL: readers wait for writers",
                self.path,
                mode,
            )
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _wal(self, conn: sqlite3.Connection) -> str:
        """Put the file in WAL mode: the change takes the whole file's lock and does not wait
        for it (processes opening a new file together collide), so it is retried within
        ``busy_timeout``; answers the mode the file is in."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextlib.contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction (``BEGIN IMMEDIATE`` to write: the lock taken at once, so two
        writers never both read and then fail to upgrade); any SQLite error, and a row that
        is not what it should be, is a ``BackendError``."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite {self.path}: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if conn.in_transaction:  # (still in it: every later BEGIN would fail)
                self._local.conn = None
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            if isinstance(exc, sqlite3.Error):
                raise BackendError(f"sqlite {self.path}: {exc}") from exc
            raise

    @staticmethod
    def _create(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def create_schema(self) -> None:
        """Create the tables when missing (idempotent; ``queue-ratelimit migrate`` runs it;
        a backend creates them at its first call on a file that has none)."""
        conn = self._connection()
        try:
            self._create(conn)
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- rows ---------------------------------------------------------------------------------

    def _entry(
        self, conn: sqlite3.Connection, integration: str, level: int, tenant: str | None
    ) -> tuple[KeyState, float] | None:
        row = conn.execute(
            "SELECT state, expires FROM qrl_keys"
            " WHERE scope = ? AND integration = ? AND level = ? AND tenant = ?",
            (self.prefix, integration, level, _column(tenant)),
        ).fetchone()
        if row is None:
            return None
        try:
            return sj.state_from(row[0]), float(row[1])
        except ValueError as exc:  # (a damaged row: the key starts afresh, as a lost one)
            log.warning(
                "queue_ratelimit: %s: the state of %s is unreadable and starts afresh: %s",
                self.path,
                integration if tenant is None else f"{integration}:{tenant}",
                exc,
            )
            return None

    def _live(
        self, conn: sqlite3.Connection, integration: str, level: int, tenant: str | None, now: float
    ) -> KeyState | None:
        entry = self._entry(conn, integration, level, tenant)
        return entry[0] if entry is not None and entry[1] > now else None

    def _put(
        self,
        conn: sqlite3.Connection,
        integration: str,
        level: int,
        tenant: str | None,
        state: KeyState,
        now: float,
    ) -> None:
        expires = now + aimd.idle_expiry(state, now, self._idle_ttl)
        conn.execute(
            "INSERT INTO qrl_keys (scope, integration, level, tenant, state, expires)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, integration, level, tenant)"
            " DO UPDATE SET state = excluded.state, expires = excluded.expires",
            (self.prefix, integration, level, _column(tenant), sj.state_text(state), expires),
        )
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            conn.execute(
                "DELETE FROM qrl_keys WHERE scope = ? AND expires <= ?",
                (self.prefix, now - self._remember_for),
            )

    def _integration_row(
        self, conn: sqlite3.Connection, integration: str
    ) -> tuple[str | None, str | None, str | None]:
        row = conn.execute(
            "SELECT breaker, fair, plan FROM qrl_integrations WHERE scope = ? AND integration = ?",
            (self.prefix, integration),
        ).fetchone()
        return (None, None, None) if row is None else (row[0], row[1], row[2])

    def _put_integration(self, conn: sqlite3.Connection, integration: str, **columns: Any) -> None:
        names = list(columns)
        conn.execute(
            f"INSERT INTO qrl_integrations (scope, integration, {', '.join(names)})"
            f" VALUES (?, ?, {', '.join('?' for _ in names)})"
            " ON CONFLICT (scope, integration) DO UPDATE SET "
            + ", ".join(f"{n} = excluded.{n}" for n in names),
            (self.prefix, integration, *columns.values()),
        )

    def _overrides(self, conn: sqlite3.Connection, integration: str) -> dict[str | None, Override]:
        held: dict[str | None, Override] = {}
        for tenant, body in conn.execute(
            "SELECT tenant, body FROM qrl_overrides WHERE scope = ? AND integration = ?",
            (self.prefix, integration),
        ):
            override = Override.from_json(body)
            if override is not None:
                held[_tenant(tenant)] = override
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
        given = plan  # (the config's: what the tools read back)
        with self._tx() as conn:
            now = self._clock()
            plan = self._bounded_plans.bounded(plan, self._overrides(conn, integration), tenant)
            state = steps.start(
                self._entry(conn, integration, KEY, tenant), now, plan, self._remember_for
            )
            upper = None
            if plan.app is not None:
                entry = self._entry(conn, integration, APP, None)
                upper = steps.start(entry, now, plan.app, self._remember_for)
            breaker_text, fair_text, plan_text = self._integration_row(conn, integration)
            breaker = _read(sj.breaker_from, breaker_text)
            shares = _read(sj.fair_from, fair_text) if plan.fair_share else None
            result, touched = step(state, breaker, now, upper, shares, plan)
            self._put(conn, integration, KEY, tenant, state, now)
            if upper is not None and touched:
                self._put(conn, integration, APP, None, upper, now)
            columns: dict[str, Any] = {}
            new_breaker = None if breaker.is_default else sj.breaker_text(breaker)
            if new_breaker != breaker_text:
                columns["breaker"] = new_breaker
            if shares is not None:
                columns["fair"] = sj.fair_text(shares)
            wrote_plan = save_plan and (
                plan_text is None or self._plans_written.get(integration) is not given
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

    def release(self, integration: str, tenant: str | None, lease_id: str) -> bool:
        """See ``Backend.release``."""
        with self._tx() as conn:
            now = self._clock()
            state = self._live(conn, integration, KEY, tenant, now)
            if state is None or not aimd.release(state, lease_id):
                return False
            conn.execute(  # (its expiry as it was: a lease given back is no use of the key)
                "UPDATE qrl_keys SET state = ?"
                " WHERE scope = ? AND integration = ? AND level = ? AND tenant = ?",
                (sj.state_text(state), self.prefix, integration, KEY, _column(tenant)),
            )
            return True

    def check(self, integration: str, tenant: str | None) -> tuple[int, float] | None:
        """See ``Backend.check``."""
        with self._tx(write=False) as conn:
            now = self._clock()
            state = self._live(conn, integration, KEY, tenant, now)
            if state is None:
                return None
            until = state.cooldown_until
            upper = self._live(conn, integration, APP, None, now)
            if upper is not None:
                until = max(until, upper.cooldown_until)
            return state.epoch, max(0.0, until - now)

    def count(self, integration: str, event: str, tenant: str | None = None) -> None:
        """See ``Backend.count``."""
        with self._tx() as conn:
            now = self._clock()
            entry = self._entry(conn, integration, KEY, tenant)
            if entry is None or entry[1] <= now:
                return
            steps.bump(entry[0], event)
            conn.execute(
                "UPDATE qrl_keys SET state = ?"
                " WHERE scope = ? AND integration = ? AND level = ? AND tenant = ?",
                (sj.state_text(entry[0]), self.prefix, integration, KEY, _column(tenant)),
            )

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

    def describe(self) -> str:
        """See ``Backend.describe``."""
        return f"sqlite {self.path} (prefix {self.prefix!r})"

    def _breaker(self, conn: sqlite3.Connection, integration: str) -> brk.BreakerState:
        return _read(sj.breaker_from, self._integration_row(conn, integration)[0])

    def snapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        """See ``Backend.snapshot``."""
        with self._tx(write=False) as conn:
            now = self._clock()
            plan = self._bounded_plans.bounded(plan, self._overrides(conn, integration), tenant)
            state = self._live(conn, integration, KEY, tenant, now)
            return aimd.snapshot(state, self._breaker(conn, integration), now, plan.limits)

    def app_snapshot(self, integration: str, plan: Plan) -> Snapshot:
        """See ``Backend.app_snapshot``."""
        assert plan.app is not None
        with self._tx(write=False) as conn:
            now = self._clock()
            state = self._live(conn, integration, APP, None, now)
            return aimd.snapshot(state, self._breaker(conn, integration), now, plan.app.limits)

    def snapshots(
        self, integration: str, tenants: Sequence[str | None], plan: Plan
    ) -> list[Snapshot]:
        """See ``Backend.snapshots``."""
        with self._tx(write=False) as conn:
            now = self._clock()
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
        query += " AND expires > ?"
        args: tuple[Any, ...] = (self.prefix, KEY, self._clock())
        if integration is not None:
            query += " AND integration = ?"
            args += (integration,)
        with self._tx(write=False) as conn:
            rows = conn.execute(query + " ORDER BY integration, tenant", args).fetchall()
        return iter([(name, _tenant(tenant)) for name, tenant in rows])

    def stats(self, integration: str) -> dict[str, int]:
        """See ``Backend.stats``."""
        totals: dict[str, int] = {}
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT state FROM qrl_keys"
                " WHERE scope = ? AND integration = ? AND level = ? AND expires > ?",
                (self.prefix, integration, KEY, self._clock()),
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
            conn.execute(
                "DELETE FROM qrl_keys WHERE scope = ? AND integration = ? AND level = ?"
                " AND tenant = ?",
                (*where, KEY, _column(tenant)),
            )
            if tenant is None:  # (with a chain's integration-wide level and fair shares)
                conn.execute(
                    "DELETE FROM qrl_keys WHERE scope = ? AND integration = ? AND level = ?",
                    (*where, APP),
                )
                conn.execute(
                    "UPDATE qrl_integrations SET fair = NULL WHERE scope = ? AND integration = ?",
                    where,
                )

    def purge(self, integration: str) -> None:
        """See ``Backend.purge``."""
        with self._tx() as conn:
            for table in ("qrl_keys", "qrl_integrations", "qrl_overrides"):
                conn.execute(
                    f"DELETE FROM {table} WHERE scope = ? AND integration = ?",
                    (self.prefix, integration),
                )
        self._plans_written.pop(integration, None)

    def set_breaker(self, integration: str, state: str, open_seconds: float) -> None:
        """See ``Backend.set_breaker``."""
        with self._tx() as conn:
            breaker = brk.force(state, self._clock(), open_seconds)
            text = None if breaker.is_default else sj.breaker_text(breaker)
            self._put_integration(conn, integration, breaker=text)

    def set_override(self, integration: str, tenant: str | None, override: Override | None) -> None:
        """See ``Backend.set_override``."""
        with self._tx() as conn:
            key = (self.prefix, integration, _column(tenant))
            if override is None:
                conn.execute(
                    "DELETE FROM qrl_overrides WHERE scope = ? AND integration = ? AND tenant = ?",
                    key,
                )
            else:
                conn.execute(
                    "INSERT INTO qrl_overrides (scope, integration, tenant, body)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (scope, integration, tenant)"
                    " DO UPDATE SET body = excluded.body",
                    (*key, override.to_json()),
                )

    def overrides(self, integration: str) -> dict[str | None, Override]:
        """See ``Backend.overrides``."""
        with self._tx(write=False) as conn:
            return self._overrides(conn, integration)

"""Limiter state in PostgreSQL: for fleets whose only shared server is their database.

Each decision and report is one transaction in two round trips (psycopg's pipeline mode):
the first locks the key's row (an upsert that answers it: concurrent workers queue per key,
never per table), with a chain the integration-wide level's row after it, and reads the
integration's row, its overrides and the server's clock; the Python policy decides
(``backends/sql.py``, ``policy/steps.py``); the second writes what changed and commits (a
decision that changes the breaker waits for that write: three). A decision that changes the
integration's breaker writes it only if no other has meanwhile, else runs again with that
row locked too.

* Commits do not wait for the disk (``synchronous_commit`` off in the decision's
  transaction; ``durable=True`` to wait): a server crash may lose the last fraction of a
  second of decisions, as a Redis without an fsync per write would.
* Time is the database server's (``clock_timestamp()``): workers on hosts whose clocks
  differ still agree.
* Waits are bounded: ``lock_timeout`` for a row another transaction holds, a statement
  timeout a little past it, ``connect_timeout`` for a connection; then the call raises
  ``BackendError`` and the limiter's outage policy holds (docs/redis.md, "When Redis is
  down"). A broken connection (the server restarted) fails its first call after the break
  (the outage policy takes it) and is replaced at the next: no worker restart.
* Rows a key has not used for ``remember_for`` past its idle expiry are deleted by a sweep
  every ``sql.SWEEP_EVERY`` writes of a process, skipping rows others hold.
* The tables are created only by ``queue-ratelimit --store URL migrate`` or
  ``create_schema()``; a decision on a database without them raises ``ConfigError``.
* Connection pools (``psycopg_pool.ConnectionPool``) and PgBouncer in transaction mode
  work: every statement runs inside the decision's transaction, settings are
  ``SET LOCAL``; with PgBouncer older than 1.21, turn prepared statements off
  (``prepare=False``, or ``prepare_threshold=None`` in a pool's ``kwargs``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from queue_ratelimit.backends.base import REMEMBER_FOR
from queue_ratelimit.backends.sql import APP, KEY, Loaded, SQLBackend, column, schema
from queue_ratelimit.errors import BackendError, ConfigError

try:
    import psycopg
    from psycopg import conninfo as pg_conninfo
    from psycopg import errors as pg_errors
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "PostgresBackend needs psycopg 3: pip install 'queue_ratelimit[postgres]'"
    ) from exc

__all__ = ["SCHEMA", "PostgresBackend"]

SCHEMA = schema(integer="smallint", real="double precision")
"""The tables (``create_schema`` runs these in one transaction; each is idempotent)."""

MIGRATE_LOCK = 0x716C72  # "qlr": concurrent migrations take turns
CLOCK = "extract(epoch FROM clock_timestamp())::float8"  # (the server's, read when evaluated)
NOW = f"SELECT {CLOCK}"
LOCK_KEY = (
    "INSERT INTO qrl_keys (scope, integration, level, tenant, state, expires)"
    " VALUES (%s, %s, %s, %s, '', 0) ON CONFLICT (scope, integration, level, tenant)"
    " DO UPDATE SET state = qrl_keys.state RETURNING state, expires"
)
READ = (  # the clock, the integration's row and its overrides, in one statement
    f"SELECT {CLOCK}, i.breaker, i.fair, i.plan,"
    " (SELECT coalesce(json_agg(json_build_array(o.tenant, o.body)), '[]'::json)"
    "  FROM qrl_overrides o WHERE o.scope = %s AND o.integration = %s)"
    " FROM (VALUES (1)) AS one"
    " LEFT JOIN qrl_integrations i ON i.scope = %s AND i.integration = %s"
)

_INHERITED: list[Any] = []
"""Connections a forked child inherited: kept, never used or closed there."""


def _shown(conninfo: str) -> str:
    """Where ``conninfo`` points, without its password."""
    try:
        parts = pg_conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "postgresql (an unreadable conninfo)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql {user}{host}{port}/{parts.get('dbname') or ''}"


def _idle(conn: Any) -> bool:
    """The connection is between transactions and out of pipeline mode."""
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    return bool(idle and conn._pipeline is None)


class PostgresBackend(SQLBackend):
    """Keeps every key in PostgreSQL tables that every worker of the fleet shares.

    Args:
        conninfo: a libpq connection string or URL (``postgresql://user@host/db``); each
            thread opens a connection of its own at its first call. Or, instead:
        pool: a ``psycopg_pool.ConnectionPool`` (anything whose ``connection()`` lends a
            psycopg connection), shared with the application.
        prefix: the scope of every row, like a Redis key prefix.
        idle_ttl: a key with no debt and no cooldown is forgotten this long after last use.
        remember_for: seconds past that for which what the key learned is kept.
        lock_timeout: the longest a call waits for a row another transaction holds,
            seconds; the statement timeout is this plus ``connect_timeout``.
        connect_timeout: the longest a new connection may take, seconds.
        prepare: let psycopg prepare statements used often (off for PgBouncer < 1.21).
        durable: a commit waits for its WAL on disk (``synchronous_commit`` on). Off by
            default: a crash of the server may lose the last fraction of a second of
            decisions (never corrupt a row), and a decision takes half the time.
        claim_ahead: seconds of slots one transaction may claim for this process's next
            acquires of a key when it asks often (``sql_claims.py``; docs/postgres.md,
            "Claiming ahead"); 0, the default: every acquire is its own transaction.
        clock: the current time in seconds; unset, the server's (tests inject a fake one).
    """

    lock_rows = " FOR UPDATE"

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        pool: Any = None,
        prefix: str = "qrl",
        idle_ttl: float = 3600.0,
        remember_for: float = REMEMBER_FOR,
        lock_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        prepare: bool = True,
        durable: bool = False,
        claim_ahead: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(
            prefix=prefix,
            idle_ttl=idle_ttl,
            remember_for=remember_for,
            clock=clock,
            claim_ahead=claim_ahead,
        )
        if (conninfo is None) == (pool is None):
            raise ConfigError(None, "conninfo", "(not shown)", "give either a conninfo or a pool")
        if pool is not None and not callable(getattr(pool, "connection", None)):
            raise ConfigError(None, "pool", pool, "must lend connections (pool.connection())")
        for name, value in (("lock_timeout", lock_timeout), ("connect_timeout", connect_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(None, name, value, "must be a number of seconds > 0")
        if conninfo is not None:
            try:
                pg_conninfo.conninfo_to_dict(conninfo)
            except psycopg.ProgrammingError:  # (libpq's message quotes it: the password too)
                raise ConfigError(
                    None,
                    "conninfo",
                    "(not shown)",
                    "is not a PostgreSQL URL or conninfo (a password's % and spaces must be"
                    " percent-encoded)",
                ) from None
        if not psycopg.Pipeline.is_supported():
            raise ConfigError(
                None,
                "conninfo",
                f"libpq {psycopg.pq.version()}",
                "psycopg's libpq has no pipeline mode (needs 14+)",
            )
        self._conninfo = conninfo
        self._pool = pool
        self._lock_ms = str(round(lock_timeout * 1000))
        self._statement_ms = str(round((lock_timeout + connect_timeout) * 1000))
        self._connect_timeout = max(2, round(connect_timeout))  # (libpq: whole seconds, >= 2)
        self._prepare = prepare
        self._commit = "on" if durable else "off"
        self._local = threading.local()
        self._opened: list[Any] = []  # every connection this process opened (``close``)
        self._opened_pid = os.getpid()
        self._opened_lock = threading.Lock()
        shown = getattr(pool, "conninfo", None) if pool is not None else conninfo
        self._where = _shown(shown) if isinstance(shown, str) else "postgresql (a pool)"

    # -- connections and transactions ---------------------------------------------------------

    def _connection(self) -> Any:
        """This thread's connection, opened at its first call and again when broken (a
        forked child opens its own and leaves the one it inherited alone)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            if not conn.closed and _idle(conn):
                return conn
            self._drop(conn)  # (broken, or left inside a transaction: see _tx)
        elif conn is not None:
            self._local.conn = None
            self._forget_inherited()
        assert self._conninfo is not None
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                prepare_threshold=5 if self._prepare else None,
            )
        except psycopg.Error as exc:
            raise BackendError(f"{self._where}: {exc}".strip()) from exc
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._opened_lock:
            self._opened.append(conn)
        return conn

    def _forget_inherited(self) -> None:
        """In a forked child: the parent's connections are kept, never used or closed here
        (closing one would end the parent's session on the socket they share)."""
        with self._opened_lock:
            if self._opened_pid != os.getpid():
                _INHERITED.extend(self._opened)
                self._opened, self._opened_pid = [], os.getpid()

    def _drop(self, conn: Any) -> None:
        """Close this thread's connection (the next call opens another)."""
        self._local.conn = None
        with self._opened_lock:
            if conn in self._opened:
                self._opened.remove(conn)
        with contextlib.suppress(Exception):
            conn.close()

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[Any]:
        if self._pool is None:
            yield self._connection()
            return
        try:
            with self._pool.connection() as conn:
                was = conn.autocommit  # (our BEGIN, not psycopg's: one round trip less)
                conn.autocommit = True
                try:
                    yield conn
                finally:
                    if not conn.closed and _idle(conn):
                        conn.autocommit = was
        except psycopg.Error as exc:  # (the pool's own: none to lend in time)
            raise BackendError(f"{self._where}: {exc}") from exc

    @contextlib.contextmanager
    def _tx(self, write: bool = True) -> Iterator[Any]:
        """One transaction in one pipeline: statements are sent together, a fetch waits for
        what was sent before it (the decision's first round trip), the end of the block
        sends the rest with ``COMMIT`` (its second); with bounded waits (``SET LOCAL``:
        PgBouncer-safe). Whatever interrupts it (an error, a task's time limit), a
        connection left inside a transaction is never used again."""
        with self._borrow() as conn:
            try:
                with conn.pipeline():  # (READ COMMITTED whatever the default: see _load)
                    conn.execute(
                        "BEGIN ISOLATION LEVEL READ COMMITTED" + ("" if write else " READ ONLY")
                    )
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, true),"
                        " set_config('statement_timeout', %s, true),"
                        " set_config('synchronous_commit', %s, true)",
                        (self._lock_ms, self._statement_ms, self._commit),
                    )
                    yield conn
                    conn.execute("COMMIT")
            except BaseException as exc:
                self._abandon(conn)
                if isinstance(exc, pg_errors.UndefinedTable):
                    raise ConfigError(
                        None,
                        "store",
                        self._where,
                        "has no queue_ratelimit tables: run `queue-ratelimit --store URL"
                        " migrate` (or PostgresBackend.create_schema()) once",
                    ) from exc
                if isinstance(exc, psycopg.Error):
                    raise BackendError(f"{self._where}: {exc}".strip()) from exc
                raise

    def _abandon(self, conn: Any) -> None:
        """After a transaction failed: roll it back, or give the connection up."""
        with contextlib.suppress(Exception):  # (then the connection is given up below)
            if not conn.closed and not _idle(conn):
                conn.execute("ROLLBACK")
        if self._pool is None and (conn.closed or not _idle(conn)):
            self._drop(conn)

    def _now(self, conn: Any) -> float:
        if self._clock is not None:
            return self._clock()
        return float(conn.execute(NOW).fetchone()[0])

    def _set_breaker_if(
        self, conn: Any, integration: str, was: str | None, text: str | None
    ) -> bool:
        """Write the integration's breaker if it is still ``was`` (only the keys' rows are
        locked: another key's decision may have changed it); whether it was."""
        cur = conn.execute(
            "INSERT INTO qrl_integrations (scope, integration, breaker) VALUES (%s, %s, %s)"
            " ON CONFLICT (scope, integration) DO UPDATE SET breaker = excluded.breaker"
            " WHERE qrl_integrations.breaker IS NOT DISTINCT FROM %s RETURNING 1",
            (self.prefix, integration, text, was),
        )
        return cur.fetchone() is not None

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def create_schema(self) -> None:
        """Create the tables when missing (idempotent; ``queue-ratelimit migrate`` runs it;
        concurrent callers take turns)."""
        with self._borrow() as conn:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
                    for statement in SCHEMA:
                        conn.execute(statement)
            except psycopg.Error as exc:
                raise BackendError(f"{self._where}: {exc}".strip()) from exc

    def close(self) -> None:
        """Close every connection this process opened (a pool is the application's to
        close); a later call opens another."""
        self._forget_inherited()
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    def describe(self) -> str:
        """See ``Backend.describe``."""
        return f"{self._where} (prefix {self.prefix!r})"

    # -- the decision's round trips -------------------------------------------------------------

    def _load(
        self,
        conn: Any,
        integration: str,
        tenant: str | None,
        chained: bool,
        lock_integration: bool = False,
    ) -> Loaded:
        """Every statement sent at once; the first fetch waits for them all. Each key's
        row is locked by an upsert that answers it (inserted empty when new: no gap in
        which another decision could take the key); the clock is read once they are held."""
        key_cur = conn.execute(LOCK_KEY, (self.prefix, integration, KEY, column(tenant)))
        app_cur = None
        if chained:  # (always after the key's: no two decisions lock in opposite orders)
            app_cur = conn.execute(LOCK_KEY, (self.prefix, integration, APP, column(None)))
        where = (self.prefix, integration)
        if lock_integration:  # (after the keys' rows: the same order everywhere)
            conn.execute(  # (an upsert: the row made if missing, and locked)
                "INSERT INTO qrl_integrations (scope, integration) VALUES (%s, %s)"
                " ON CONFLICT (scope, integration)"
                " DO UPDATE SET breaker = qrl_integrations.breaker",
                where,
            )
        read = conn.execute(READ, where + where)
        found = key_cur.fetchone()
        upper = app_cur.fetchone() if app_cur is not None else None
        at, breaker, fair_text, plan_text, overrides = read.fetchone()
        return Loaded(
            float(at) if self._clock is None else self._clock(),
            (found[0], float(found[1])),
            None if upper is None else (upper[0], float(upper[1])),
            breaker,
            fair_text,
            plan_text,
            [(tenant, body) for tenant, body in overrides],
        )

    def _sweep(self, conn: Any, now: float) -> None:
        """Delete rows past what they remember, skipping any another transaction holds."""
        conn.execute(
            "DELETE FROM qrl_keys WHERE ctid IN (SELECT ctid FROM qrl_keys"
            " WHERE scope = %s AND expires <= %s LIMIT 1000 FOR UPDATE SKIP LOCKED)",
            (self.prefix, now - self._remember_for),
        )

"""Limiter state in a SQLite file: several processes on one host share it, no server needed.

Each decision and report is one ``BEGIN IMMEDIATE`` transaction (``backends/sql.py`` holds the
rows and the rules, shared with ``PostgresBackend``): the lock on the whole file is taken at
once, so every decision sees the rows as the last one left them. The database is in WAL
mode, so readers (``status``, the exporter) never wait for writers; writers queue on
SQLite's lock, each for at most ``busy_timeout`` seconds, after which the call raises
``BackendError`` and the limiter's outage policy decides (docs/redis.md, "When Redis is
down"). The tables are created at the first call on a file that has none.

Time is this host's clock (``time.time``): the processes sharing a file share it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

from queue_ratelimit.backends.base import REMEMBER_FOR
from queue_ratelimit.backends.sql import SQLBackend, schema
from queue_ratelimit.errors import BackendError, ConfigError

__all__ = ["SCHEMA", "SQLiteBackend"]

log = logging.getLogger(__name__)

SCHEMA = schema(integer="INTEGER", real="REAL", suffix=" WITHOUT ROWID")
"""The tables (``create_schema`` runs these; each is idempotent)."""


_INHERITED: list[sqlite3.Connection] = []
"""Connections a forked child inherited: kept, never used or closed there."""


class SQLiteBackend(SQLBackend):
    """Keeps every key in a SQLite file that the processes of one host share.

    Args:
        path: the database file (created with its tables when missing); ``":memory:"`` is
            refused (each connection would have a database of its own).
        prefix: the scope of every row, like a Redis key prefix.
        idle_ttl: a key with no debt and no cooldown is forgotten this long after last use.
        remember_for: seconds past that for which what the key learned is kept.
        busy_timeout: the longest a call waits for another process's transaction, seconds;
            then it raises ``BackendError`` and the outage policy holds.
        claim_ahead: seconds of slots one transaction may claim for this process's next
            acquires of a key when it asks often (``sql_claims.py``; docs/sqlite.md); 0,
            the default: every acquire is its own transaction.
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
        claim_ahead: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            prefix=prefix,
            idle_ttl=idle_ttl,
            remember_for=remember_for,
            clock=clock,
            claim_ahead=claim_ahead,
        )
        path = os.fspath(path)
        if not path or path == ":memory:" or path.startswith("file::memory:"):
            raise ConfigError(None, "path", path, "must name a file the processes share")
        if not (isinstance(busy_timeout, int | float) and busy_timeout > 0):
            raise ConfigError(None, "busy_timeout", busy_timeout, "must be a number of seconds > 0")
        self.path = path
        self._busy_timeout = float(busy_timeout)
        self._local = threading.local()
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

    def describe(self) -> str:
        """See ``Backend.describe``."""
        return f"sqlite {self.path} (prefix {self.prefix!r})"

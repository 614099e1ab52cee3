"""A PostgreSQL server for the tests: the one the machine runs, else one of our own.

``PostgresProcess`` runs ``initdb`` and ``pg_ctl`` on a free port in a directory of its own
(as the ``postgres`` user, or ``nobody``, when the tests run as root: the server refuses
root); a test may stop and start it again (an outage: its tables and rows survive).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import urllib.parse

import psycopg

from tests.support import free_port

POSTGRES_HINT = (
    "PostgreSQL is needed by the test suite and none is reachable, and no initdb/pg_ctl "
    "was found to start one. Install it (Debian/Ubuntu: apt-get install postgresql; macOS: "
    "brew install postgresql) or set QRL_POSTGRES_URL to a reachable server."
)
DATABASE = "qrl_test"


def reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def with_database(url: str, name: str = DATABASE) -> str:
    """A database of the tests' own on the server at ``url`` (created when missing)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found is None:
            # (another test process made it first: either error, as the race goes)
            raced = (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation)
            with contextlib.suppress(*raced):
                conn.execute(f'CREATE DATABASE "{name}"')
    if "://" in url:  # (a URL stays one: the CLI's --store takes URLs)
        parsed = urllib.parse.urlsplit(url)
        return urllib.parse.urlunsplit(parsed._replace(path=f"/{name}"))
    return psycopg.conninfo.make_conninfo(url, dbname=name)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise RuntimeError(POSTGRES_HINT)


class PostgresProcess:
    """A PostgreSQL server of our own, trusting local connections as ``postgres``."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="qrl-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user: str | None = None
        if os.geteuid() == 0:  # (the server will not run as root)
            for user in ("postgres", "nobody"):
                try:
                    entry = pwd.getpwnam(user)
                except KeyError:
                    continue
                self._user = user
                os.chown(self.dir, entry.pw_uid, entry.pw_gid)
                break

    def _run(self, *args: str) -> None:
        command = list(args)
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")

    def start(self) -> PostgresProcess:
        if not os.path.exists(self.data):
            self._run(
                self.initdb,
                "-D",
                self.data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--no-locale",
            )
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(self.pg_ctl, "-D", self.data, "-l", self.log, "-o", options, "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", self.data, "-m", mode, "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

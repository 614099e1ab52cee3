"""A PostgreSQL server for the tests: the one the machine runs, else one of our own; and a
PgBouncer in front of it.

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
import signal
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import psycopg

from tests.support import free_port

POSTGRES_HINT = (
    "PostgreSQL is needed by the test suite and none is reachable, and no initdb/pg_ctl "
    "was found to start one. Install it (Debian/Ubuntu: apt-get install postgresql; macOS: "
    "brew install postgresql) or set QRL_POSTGRES_URL to a reachable server."
)
PGBOUNCER_HINT = (
    "The PgBouncer test needs the pgbouncer binary and none was found. Install it "
    "(Debian/Ubuntu: apt-get install pgbouncer; macOS: brew install pgbouncer)."
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


def _not_root(*paths: str) -> str | None:
    """Running as root (the servers refuse it): the user to run them as (``postgres``, else
    ``nobody``), given ``paths``; None when not root."""
    if os.geteuid() != 0:
        return None
    for user in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            continue
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return user
    return None


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
        self._user = _not_root(self.dir)  # (the server will not run as root)

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


class PgBouncerProcess:
    """A PgBouncer of our own in transaction mode in front of the database at ``url``
    (trusting ``postgres``); its ``url`` reaches that database through it."""

    def __init__(self, url: str) -> None:
        self.binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(self.binary):
            raise RuntimeError(PGBOUNCER_HINT)
        parts = psycopg.conninfo.conninfo_to_dict(url)
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="qrl-pgbouncer-")
        dbname = str(parts.get("dbname") or "postgres")
        target = f"host={parts.get('host') or '127.0.0.1'} port={parts.get('port') or 5432}"
        with open(os.path.join(self.dir, "users.txt"), "w") as users:
            users.write('"postgres" ""\n')
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        with open(self.ini, "w") as ini:
            ini.write(
                f"[databases]\n{dbname} = {target} dbname={dbname} user=postgres\n"
                f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\n"
                f"unix_socket_dir = {self.dir}\nauth_type = trust\n"
                f"auth_file = {self.dir}/users.txt\npool_mode = transaction\n"
                f"logfile = {self.dir}/pgbouncer.log\npidfile = {self.dir}/pgbouncer.pid\n"
                "max_client_conn = 100\ndefault_pool_size = 4\n"
            )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"
        self._user = _not_root(self.dir, self.ini, os.path.join(self.dir, "users.txt"))

    def start(self) -> PgBouncerProcess:
        command = [self.binary, "-d", self.ini]
        if self._user is not None:
            command = [self.binary, "-d", "-u", self._user, self.ini]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"pgbouncer failed: {done.stdout}{done.stderr}")
        deadline = time.monotonic() + 30
        while not reachable(self.url):
            if time.monotonic() > deadline:
                log = Path(self.dir, "pgbouncer.log").read_text(errors="replace")
                raise RuntimeError(f"pgbouncer did not answer: {log[-2000:]}")
            time.sleep(0.1)
        return self

    def close(self) -> None:
        pidfile = os.path.join(self.dir, "pgbouncer.pid")
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(Path(pidfile).read_text().strip()), signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)

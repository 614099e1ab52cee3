"""Run from outside the checkout, with the built wheel installed in a clean venv: the package
imports, its Lua scripts ship as package data, and one acquire is decided on a real Redis
($REDIS_URL or 127.0.0.1:6379, else a redis-server started here)."""

from __future__ import annotations

import importlib.resources
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

import queue_ratelimit
from queue_ratelimit import IntegrationConfig, Limiter
from queue_ratelimit.backends.redis import RedisBackend

SOURCE = Path(__file__).resolve().parents[1] / "queue_ratelimit"
SCRIPTS = sorted(str(p.relative_to(SOURCE)) for p in SOURCE.rglob("*.lua"))  # all must ship


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _start_redis() -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("wheel check: no Redis reachable and no redis-server on PATH")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="qrl-wheel-redis-")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _reachable(url):
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit("wheel check: could not start redis-server")
        time.sleep(0.05)
    return url, server


def main() -> None:
    installed = Path(queue_ratelimit.__file__).resolve()
    checkout = Path(__file__).resolve().parents[1]
    if checkout in installed.parents or "site-packages" not in installed.parts:
        sys.exit(f"wheel check: imported {installed}, not the installed wheel")
    for script in SCRIPTS:
        source = importlib.resources.files("queue_ratelimit").joinpath(script).read_text()
        assert "redis.call" in source, f"{script} is empty"
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    server = None
    if not _reachable(url):
        url, server = _start_redis()
    try:
        backend = RedisBackend(url, prefix=f"qrl-wheel-{os.getpid()}")
        limiter = Limiter(backend, {"wheel": IntegrationConfig(name="wheel", rate_limit_per_sec=5)})
        decision = limiter.acquire("wheel")
        assert decision.granted, decision
        limiter.reset("wheel")
        print(
            f"wheel check: {installed.parent} imports, loads its {len(SCRIPTS)} Lua scripts, "
            f"acquired on {url}"
        )
    finally:
        if server is not None:
            server.kill()


if __name__ == "__main__":
    main()

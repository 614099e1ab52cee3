"""Count the CPU instructions Redis spends on one call of each script, under callgrind.

Wall-clock figures on a shared VM move by tens of percent between runs; instruction counts
do not. This starts its own ``redis-server`` under ``valgrind --tool=callgrind`` on a free
port, makes N calls of each contender (raw ``return 1``, this project's acquire and success
report, ``limits``' moving window) between a zeroing and a dump of the counters, and prints
instructions per call and their ratio to the raw script. Needs ``valgrind`` (Debian:
``apt-get install valgrind``) and ``redis-server`` on the PATH.

    python benchmarks/lua_cost.py [--calls N]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from text_table import table

from queue_ratelimit import IntegrationConfig, Limiter
from queue_ratelimit.backends.redis import RedisBackend

HUGE = 1_000_000_000
WARMUP = 50


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(port: int, out: Path) -> subprocess.Popen[bytes]:
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p"]
    server = subprocess.Popen(
        [*valgrind, "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client.ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("redis-server under valgrind did not answer within 60 s")


def _instructions(pid: int, out: Path, call: Callable[[], object], calls: int) -> float:
    """Instructions the server executed per ``call``, from a callgrind dump around them."""
    for _ in range(WARMUP):
        call()
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    for _ in range(calls):
        call()
    before = set(out.iterdir())
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while not (dumps := set(out.iterdir()) - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    text = max(dumps, key=lambda p: p.stat().st_mtime).read_text()
    for dump in dumps:
        dump.unlink()
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if found is None:
        raise SystemExit("no instruction total in the callgrind dump")
    return int(found.group(1)) / calls


def _contenders(port: int) -> dict[str, Callable[[], object]]:
    client = redis.Redis(port=port)
    sha = client.script_load("return 1")
    config = IntegrationConfig(
        "bench", rate_limit_per_sec=HUGE, burst_size=HUGE, min_rate=1, max_rate=HUGE, max_wait=0
    )
    limiter = Limiter(RedisBackend(client, prefix="luacost"), {"bench": config})

    from limits import RateLimitItemPerSecond
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    window = MovingWindowRateLimiter(RedisStorage(f"redis://127.0.0.1:{port}/0"))
    item = RateLimitItemPerSecond(HUGE)
    return {
        "raw EVALSHA (return 1)": lambda: client.evalsha(sha, 0),
        "queue_ratelimit acquire": lambda: limiter.acquire("bench"),
        "queue_ratelimit on_success": lambda: limiter.on_success("bench"),
        "limits moving window": lambda: window.hit(item, "bench"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per contender")
    args = parser.parse_args(argv)
    tools = ("valgrind", "callgrind_control", "redis-server")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        print(f"needs {', '.join(missing)} (Debian: apt-get install valgrind redis-server)")
        return 1
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        server = _start(port, out)
        try:
            counts = {
                name: _instructions(server.pid, out, call, args.calls)
                for name, call in _contenders(port).items()
            }
        finally:
            server.terminate()
            server.wait(timeout=60)
    raw = next(iter(counts.values()))
    body = [[name, f"{n:,.0f}", f"{n / raw:.1f}x"] for name, n in counts.items()]
    print(f"redis-server instructions per call (callgrind, {args.calls:,} calls each)")
    print(table(["contender", "instructions", "vs raw"], body, "lrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

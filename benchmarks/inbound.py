"""Requests per second of a trivial ASGI endpoint with and without the inbound middleware.

Four uvicorn servers (one worker each) serve ``inbound_app.py``: bare, and behind
``InboundRateLimitMiddleware`` with one rule (per client) and with two (per client, and a
global one: two decisions per request) on Redis, and with one rule in memory (the
middleware's own cost apart from Redis), every request granted. One load process keeps
``--concurrency`` keep-alive connections busy (raw asyncio streams: an HTTP client
library's own cost would hide the servers') and times each server in interleaved slices of
0.5 s, so drift in the machine's load falls on all alike.

    python benchmarks/inbound.py [--redis URL] [--seconds 6] [--concurrency 16]

Prints requests/s of each and their ratio; exit status 0 whenever the run completes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis
from text_table import table

HERE = Path(__file__).resolve().parent
SLICE = 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _server(rules: int, store: str, prefix: str) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "QRL_BENCH_RULES": str(rules)}
    env |= {"QRL_BENCH_STORE": store, "QRL_BENCH_PREFIX": prefix}
    command = [sys.executable, "-m", "uvicorn", "inbound_app:app", "--port", str(port)]
    command += ["--workers", "1", "--log-level", "warning", "--no-access-log"]
    server = subprocess.Popen(command, cwd=HERE, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/", headers={"X-API-Key": "warm"}).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"uvicorn did not start on {base}")
            time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


async def _connection(host: str, port: int, key: str) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection(host, port)
    return reader, writer


async def _get(reader: asyncio.StreamReader, writer: Any, request: bytes) -> int:
    """One keep-alive GET on a raw connection (httpx's own cost would hide the server's)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _slice(base: str, seconds: float, tasks: int, pool: dict[Any, Any]) -> int:
    host, port = base.removeprefix("http://").split(":")
    deadline = time.perf_counter() + seconds

    async def one(n: int) -> int:
        request = f"GET / HTTP/1.1\r\nHost: {host}\r\nX-API-Key: client-{n % 4}\r\n\r\n".encode()
        if (base, n) not in pool:
            pool[(base, n)] = await _connection(host, int(port), f"client-{n % 4}")
        reader, writer = pool[(base, n)]
        done = 0
        while time.perf_counter() < deadline:
            done += await _get(reader, writer, request) == 200
        return done

    return sum(await asyncio.gather(*(one(n) for n in range(tasks))))


async def _measure(bases: dict[str, str], seconds: float, tasks: int) -> dict[str, float]:
    done = dict.fromkeys(bases, 0)
    pool: dict[Any, Any] = {}
    for base in bases.values():  # open and warm the connections
        await _slice(base, 0.3, tasks, pool)
    rounds = max(1, round(seconds / SLICE))
    for _ in range(rounds):
        for name, base in bases.items():
            done[name] += await _slice(base, seconds / rounds, tasks, pool)
    for _, writer in pool.values():
        writer.close()
    return {name: count / seconds for name, count in done.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per server")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    args = parser.parse_args(argv)
    prefix = f"qrl-bench-in-{secrets.token_hex(3)}"
    print(
        f"one uvicorn worker per server, {args.concurrency} requests in flight, "
        f"{args.seconds:g} s each in {SLICE} s slices, store {args.redis}"
    )
    with (
        _server(0, args.redis, prefix) as bare,
        _server(1, args.redis, prefix) as one,
        _server(2, args.redis, prefix) as two,
        _server(1, "memory://", prefix) as local,
    ):
        servers = {
            "bare": bare,
            "middleware, 1 rule": one,
            "middleware, 2 rules": two,
            "middleware, 1 rule, memory": local,
        }
        rates = asyncio.run(_measure(servers, args.seconds, args.concurrency))
    client = redis.Redis.from_url(args.redis)
    keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    base = rates["bare"]
    body = [[name, f"{rate:,.0f}", f"{rate / base:.2f}"] for name, rate in rates.items()]
    print(table(["server", "requests/s", "vs bare"], body, "lrr"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m queue_ratelimit.testing``: the hidden-limit upstream as a standalone server."""

from __future__ import annotations

import argparse
import math
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from queue_ratelimit.testing.upstream import DIALECTS, HiddenLimitUpstream

__all__ = ["main"]

_FORGET_EVERY = 60.0  # seconds between the standalone server's resets of its counts


def _port(raw: str) -> int:
    """An argparse ``type``: a TCP port, 0 meaning a free one."""
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535: {raw!r}")
    return port


def _positive(raw: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0: {raw!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m queue_ratelimit.testing",
        description="Serve a local HTTP API that enforces a hidden rate limit per bucket "
        "(every GET/POST to /<bucket>/<call-id> counts), until interrupted.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=8080,
        help="port to listen on, 0 for a free one (default: %(default)s)",
    )
    parser.add_argument(
        "--limit",
        type=_positive,
        default=20.0,
        help="calls allowed per window and bucket: the hidden limit (default: %(default)s)",
    )
    parser.add_argument(
        "--window",
        type=_positive,
        default=1.0,
        help="the window, in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--dialect",
        choices=DIALECTS,
        default="retry-after",
        help="the rate-limit headers it sends (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a ``HiddenLimitUpstream`` in the foreground until Ctrl-C or SIGTERM.

    ``python -m queue_ratelimit.testing --host 0.0.0.0 --port 8080 --limit 20
    --dialect retry-after``: every bucket (``/<bucket>/...``) allows ``--limit`` calls per
    ``--window`` seconds. It prints the URL it serves, and nothing per request; nobody reads
    its counts, so it forgets them every minute (a server that runs for days stays small).

    Raises:
        SystemExit: 2 for an invalid argument, 1 when the address cannot be bound.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.host:
        parser.error("--host must not be empty")
    upstream = HiddenLimitUpstream(args.limit, args.window, headers=args.dialect)
    try:
        upstream.start(args.host, args.port)
    except OSError as exc:
        parser.exit(1, f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}\n")
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)  # a container's stop, even as PID 1
    print(
        f"serving {upstream.url}: {args.limit:g} calls per {args.window:g} s per bucket, "
        f"{args.dialect} dialect (Ctrl-C to stop)",
        flush=True,
    )
    try:
        while not stopped.wait(_FORGET_EVERY):
            upstream._forget_counts()
    except KeyboardInterrupt:
        pass
    finally:
        upstream.stop()

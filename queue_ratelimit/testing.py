"""A real local HTTP upstream that enforces a hidden rate limit: test your tasks against it.

``HiddenLimitUpstream`` is a threaded HTTP server on 127.0.0.1 (a free port) that behaves like
a rate-limited SaaS API. Every ``GET``/``POST`` to ``/<bucket>/<call-id>`` counts against the
limit of ``<bucket>`` (``limit`` calls per ``window`` seconds); beyond it the server answers
429 with ``Retry-After``. It counts what it served per call id, so a test can assert that
every task ran exactly once::

    with HiddenLimitUpstream(limit=10, window=1.0, headers="retry-after") as upstream:
        run_my_tasks(base_url=upstream.url)
        assert upstream.served_once(expected_ids)

``headers`` chooses the dialect: ``"retry-after"`` (429 + ``Retry-After`` only),
``"x-ratelimit"`` or its alias ``"github"`` (also ``X-RateLimit-Limit/-Remaining/-Reset``
on every answer, Reset in epoch seconds, as GitHub sends them), ``"ietf"`` (the IETF
``RateLimit-Limit/-Remaining/-Reset`` fields, Reset in delta seconds, plus
``RateLimit-Policy``), or ``"none"`` (a bare 429). The quota dialects count a fixed
window. A call with ``?tokens=N`` is answered with ``{"usage": {"total_tokens": N}}``, like
an LLM API reporting what a call really cost.
``set_limit`` changes the limit mid-run; ``fail_with(500)`` makes every call fail (for the
breaker); ``require_token`` checks ``Authorization: Bearer <token>``. Nothing is logged (a
token never reaches a log).

Standalone, for a demo or a compose stack, it serves until interrupted (Ctrl-C or SIGTERM)::

    python -m queue_ratelimit.testing --host 0.0.0.0 --port 8080 --limit 20 --dialect retry-after
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import signal
import threading
import time
import urllib.parse
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType

__all__ = ["HiddenLimitUpstream", "main"]

_DIALECTS = ("retry-after", "x-ratelimit", "github", "ietf", "none")
_FORGET_EVERY = 60.0  # seconds between the standalone server's resets of its counts


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the upstream never logs requests (or their tokens)."""

    def do_GET(self) -> None:
        self.server.upstream._serve(self)

    do_POST = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    upstream: HiddenLimitUpstream


class HiddenLimitUpstream:
    """A local HTTP server allowing ``limit`` calls per ``window`` seconds per bucket.

    Args:
        limit: calls allowed per window (the hidden limit the client must discover).
        window: the window in seconds; a sliding window for ``retry-after``/``none``, a fixed
            one (aligned to multiples of ``window``) for ``x-ratelimit``.
        headers: ``"retry-after"``, ``"x-ratelimit"`` or ``"none"`` (see the module doc).
        require_token: when set, calls without ``Authorization: Bearer <token>`` get 401.
    """

    def __init__(
        self,
        limit: float,
        window: float = 1.0,
        *,
        headers: str = "retry-after",
        require_token: str | None = None,
    ) -> None:
        if headers not in _DIALECTS:
            raise ValueError(f"headers must be one of {_DIALECTS}, not {headers!r}")
        if limit <= 0 or window <= 0:
            raise ValueError("limit and window must be > 0")
        self.limit = limit
        self.window = window
        self.headers = headers
        self.require_token = require_token
        self._lock = threading.Lock()
        self._recent: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._fixed: dict[str, tuple[float, int]] = {}
        self._fault: int | None = None
        self._storm: tuple[float, str] | None = None
        self._dice = random.Random(0)  # a storm hits the same calls run after run
        self.served: collections.Counter[str] = collections.Counter()
        self.status_counts: collections.Counter[int] = collections.Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> HiddenLimitUpstream:
        """Listen on ``host:port`` (by default a free port of 127.0.0.1) in a background thread.

        Raises:
            OSError: the address cannot be bound (port taken, unknown host).
        """
        server = _Server((host, port), _Handler)
        server.upstream = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HiddenLimitUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("the upstream is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- controls and counts ---------------------------------------------------------------

    def set_limit(self, limit: float) -> None:
        """Change the hidden limit from now on."""
        with self._lock:
            self.limit = limit

    def fail_with(self, status: int | None) -> None:
        """Answer every call with ``status`` (e.g. 500) until called with ``None``."""
        with self._lock:
            self._fault = status

    def storm(self, fraction: float | None, retry_after: float = 0.0) -> None:
        """Answer 429 (with ``Retry-After: retry_after``) to a random ``fraction`` of the
        calls the limit would let through, until called with ``None``."""
        if fraction is not None and not 0 <= fraction <= 1:
            raise ValueError("fraction must lie in [0, 1]")
        with self._lock:
            self._storm = None if fraction is None else (fraction, f"{retry_after:g}")

    def count(self, status: int) -> int:
        """How many answers had ``status``."""
        with self._lock:
            return self.status_counts[status]

    def served_once(self, call_ids: set[str]) -> bool:
        """Every id in ``call_ids`` was served (200) exactly once, and nothing else was."""
        with self._lock:
            return set(self.served) == call_ids and all(n == 1 for n in self.served.values())

    def _forget_counts(self) -> None:
        """Drop the per-call counts: a standalone server nobody asks would grow without end."""
        with self._lock:
            self.served.clear()
            self.status_counts.clear()

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        path, _, query = handler.path.partition("?")
        parts = path.strip("/").split("/")
        bucket, call_id = parts[0], "/".join(parts[1:])
        params = urllib.parse.parse_qs(query)
        expected = f"Bearer {self.require_token}"
        if self.require_token is not None and handler.headers.get("Authorization") != expected:
            self._answer(handler, 401, {}, {"error": "unauthorized"})
            return
        with self._lock:
            status, headers = self._decide(bucket, time.time())
            self.status_counts[status] += 1
            if status == 200:
                self.served[call_id] += 1
        body: dict[str, object] = {"id": call_id, "status": status}
        if status == 200 and "tokens" in params:  # an LLM-style API reports its usage
            body["usage"] = {"total_tokens": int(params["tokens"][0])}
        self._answer(handler, status, headers, body)

    def _decide(self, bucket: str, now: float) -> tuple[int, dict[str, str]]:
        if self._fault is not None:
            return self._fault, {}
        if self._storm is not None and self._dice.random() < self._storm[0]:
            return 429, {"Retry-After": self._storm[1]}
        if self.headers in ("x-ratelimit", "github", "ietf"):
            return self._decide_fixed(bucket, now)
        recent = self._recent[bucket]
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(recent) >= self.limit:
            if self.headers == "none":
                return 429, {}
            wait = recent[0] + self.window - now
            return 429, {"Retry-After": str(max(1, math.ceil(wait)))}
        recent.append(now)
        return 200, {}

    def _decide_fixed(self, bucket: str, now: float) -> tuple[int, dict[str, str]]:
        start = math.floor(now / self.window) * self.window
        window_start, used = self._fixed.get(bucket, (start, 0))
        if window_start != start:
            used = 0
        limit = math.floor(self.limit)
        status = 200 if used < limit else 429
        if status == 200:
            used += 1
        self._fixed[bucket] = (start, used)
        reset = start + self.window
        left = str(max(0, limit - used))
        if self.headers == "ietf":
            headers = {
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": left,
                "RateLimit-Reset": str(max(1, math.ceil(reset - now))),
                "RateLimit-Policy": f"{limit};w={self.window:g}",
            }
        else:
            headers = {
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": left,
                "X-RateLimit-Reset": f"{reset:.3f}",
            }
        if status == 429:
            headers["Retry-After"] = str(max(1, math.ceil(reset - now)))
        return status, headers

    @staticmethod
    def _answer(
        handler: _Handler, status: int, headers: dict[str, str], body: dict[str, object]
    ) -> None:
        payload = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)


# -- standalone: python -m queue_ratelimit.testing ------------------------------------------


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
        choices=_DIALECTS,
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


if __name__ == "__main__":
    main()

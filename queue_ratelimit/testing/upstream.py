"""The hidden-limit upstream: a threaded local HTTP server (see the package docstring)."""

from __future__ import annotations

import collections
import json
import math
import random
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from queue_ratelimit.testing.cost import CostBuckets

__all__ = ["DIALECTS", "LOCK_TIMEOUT", "HiddenLimitUpstream"]

LOCK_TIMEOUT = "lock_timeout"
"""The error code of a call ``busy`` answers (Stripe's, for an object another request holds)."""

DIALECTS = ("retry-after", "x-ratelimit", "github", "ietf", "none", "graphql-cost")


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
        if headers not in DIALECTS:
            raise ValueError(f"headers must be one of {DIALECTS}, not {headers!r}")
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
        self._busy: float | None = None
        self._dice = random.Random(0)  # a storm hits the same calls run after run
        self._costs = CostBuckets(limit, window)
        self.served: collections.Counter[str] = collections.Counter()
        self.served_at: dict[str, list[float]] = collections.defaultdict(list)  # by bucket
        self.served_when: dict[str, float] = {}  # by call id: its (last) 200
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

    def busy(self, fraction: float | None) -> None:
        """Answer a random ``fraction`` of the calls the limit lets through as Stripe does
        when another request holds the object: ``429`` with the error code
        ``lock_timeout`` in the body (a dialect's ``contention_codes``), until called with
        ``None``. Such a call is not served."""
        if fraction is not None and not 0 <= fraction <= 1:
            raise ValueError("fraction must lie in [0, 1]")
        with self._lock:
            self._busy = fraction

    def count(self, status: int) -> int:
        """How many answers had ``status``."""
        with self._lock:
            return self.status_counts[status]

    def throttled(self) -> int:
        """How many calls the ``graphql-cost`` dialect answered ``THROTTLED`` (with a 200)."""
        with self._lock:
            return self._costs.throttled

    def served_once(self, call_ids: set[str]) -> bool:
        """Every id in ``call_ids`` was served (200) exactly once, and nothing else was."""
        with self._lock:
            return set(self.served) == call_ids and all(n == 1 for n in self.served.values())

    def _forget_counts(self) -> None:
        """Drop the per-call counts: a standalone server nobody asks would grow without end."""
        with self._lock:
            self.served.clear()
            self.served_at.clear()
            self.served_when.clear()
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
        if self.headers == "graphql-cost":
            requested = _number(params, "cost", 1.0)
            actual = _number(params, "actual", requested)
            with self._lock:
                served, body = self._costs.answer(bucket, time.time(), requested, actual)
                self.status_counts[200] += 1
                self.served[call_id] += int(served)
            self._answer(handler, 200, {}, body)
            return
        with self._lock:
            now = time.time()
            status, headers = self._decide(bucket, now)
            busy = status == 200 and self._busy is not None and self._dice.random() < self._busy
            if busy:
                status = 429
            self.status_counts[status] += 1
            if status == 200:
                self.served[call_id] += 1
                self.served_at[bucket].append(now)
                self.served_when[call_id] = now
        answer: dict[str, object] = {"id": call_id, "status": status}
        if busy:
            answer["error"] = {"type": "invalid_request_error", "code": LOCK_TIMEOUT}
        if status == 200 and "tokens" in params:  # an LLM-style API reports its usage
            answer["usage"] = {"total_tokens": int(params["tokens"][0])}
        self._answer(handler, status, headers, answer)

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


def _number(params: dict[str, list[str]], name: str, default: float) -> float:
    """A query parameter as a number >= 0 (``?cost=12``); ``default`` when absent or bad."""
    try:
        value = float(params[name][0])
    except (KeyError, IndexError, ValueError):
        return default
    return value if math.isfinite(value) and value >= 0 else default

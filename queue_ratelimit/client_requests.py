"""What the HTTP clients read of a request or an answer, whatever the library: its host,
method and path, a digest of its token, whether its body is small enough to read."""

from __future__ import annotations

import hashlib
import urllib.parse
from typing import Any

import httpx

from queue_ratelimit.policy.signals_body import MAX_BODY_BYTES

__all__ = ["Request", "host_of", "method_and_path", "small", "token_tenant"]

Request = Any
"""A ``requests.PreparedRequest``, an ``httpx.Request`` or an ``aiohttp.ClientRequest``: each
has ``.url`` and ``.headers`` (aiohttp's is imported only by its middleware: an extra)."""


def small(headers: Any) -> bool:
    """The answer states a length under ``MAX_BODY_BYTES``, uncompressed (read whole,
    cheaply: a compressed length says nothing of what it decodes to)."""
    if headers.get("content-encoding", "identity").strip().lower() != "identity":
        return False
    try:
        return 0 <= int(headers.get("content-length", "")) < MAX_BODY_BYTES
    except (TypeError, ValueError):
        return False


def token_tenant(authorization: str | None) -> str | None:
    """A stable, non-reversible tenant name for an Authorization header value."""
    if not authorization:
        return None
    return "tok-" + hashlib.sha256(authorization.encode()).hexdigest()[:16]


def host_of(request: Request) -> tuple[str, int | None, str]:
    """(host, port, scheme) of a ``requests``, ``httpx`` or ``aiohttp`` request."""
    if isinstance(request, httpx.Request):
        return request.url.host, request.url.port, request.url.scheme
    url = request.url
    if isinstance(url, str) or url is None:  # requests
        parts = urllib.parse.urlsplit(url or "")
        return parts.hostname or "", parts.port, parts.scheme
    return str(url.host or ""), url.explicit_port, str(url.scheme)  # aiohttp's yarl.URL


def method_and_path(request: Request) -> tuple[str, str]:
    """(method, path) of a ``requests``, ``httpx`` or ``aiohttp`` request."""
    url = request.url
    if isinstance(url, str) or url is None:  # requests
        return str(request.method or "GET"), urllib.parse.urlsplit(url or "").path or "/"
    return str(request.method), str(url.path) or "/"  # httpx.URL, yarl.URL

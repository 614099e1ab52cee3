"""Zero configuration per host: an integration for each API host an HTTP client calls.

Pass :data:`BY_HOST` as the ``integration`` of a rate-limited HTTP client and every request
is limited under the integration of its host: the built-in one whose API lives there
(``api.github.com`` is ``github``) when the limiter knows it, else one named after the host
(``host-api_example_com``, ``host-127_0_0_1-8080`` with a port) that
:meth:`~queue_ratelimit.Limiter.for_host` creates from :func:`host_config`: a cautious start
with the start phase on, so an API nobody described still gets a shared, adaptive limit
that the generic parser's headers feed forward. Configure ``host-...`` like any integration
(TOML, JSON, environment) to give a host its own figures.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Final

from queue_ratelimit.config import IntegrationConfig

__all__ = ["BY_HOST", "HOST_PREFIX", "MAX_HOSTS", "OTHER_HOSTS", "host_config", "host_integration"]

BY_HOST: Final = "queue_ratelimit:by-host"
"""Pass as an HTTP client's ``integration`` to limit each request by its host."""

HOST_PREFIX: Final = "host-"
"""The names of integrations made for a host start with this."""

MAX_HOSTS: Final = 256
"""Integrations made for hosts at most, per limiter; calls to any further host share
:data:`OTHER_HOSTS` (a client calling every customer's webhook must not grow without end)."""

OTHER_HOSTS: Final = "host-other"
"""The integration every host past :data:`MAX_HOSTS` shares."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PLAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*")  # an ASCII host: dots become "_"
_MAX_NAME = 64


def host_integration(
    host: str, port: int | None, scheme: str, known_hosts: Mapping[str, str]
) -> str:
    """The integration name for ``scheme://host:port``: the one ``known_hosts`` maps the
    host to, else ``host-<host>`` with its dots as ``_`` (``host-api_example_com``); a port
    other than the scheme's default, a host that is not plain ASCII letters, digits, dots
    and hyphens (an IP v6 address, a name with ``_``), or a name past 64 characters adds a
    digest of ``host:port``, so no two hosts share a name."""
    host = _ascii(host.lower().rstrip(".").strip("[]"))
    if port is not None and port == _DEFAULT_PORTS.get(scheme.lower()):
        port = None
    if port is None and host in known_hosts:
        return known_hosts[host]
    plain = _PLAIN.fullmatch(host) is not None
    name = HOST_PREFIX + (host.replace(".", "_") if plain else re.sub(r"[^a-z0-9-]", "_", host))
    if port is None and plain and len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(f"{host}:{port}".encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11]}-{digest}"


def _ascii(host: str) -> str:
    """A host as its ASCII (IDNA) form, so ``bücher.de`` is one name whichever client asks."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def host_config(name: str) -> IntegrationConfig:
    """The config of a host nobody configured: 1 request/s to start, climbing fast (the
    start phase) to what the API serves, at most 50/s, with the generic dialect."""
    return IntegrationConfig(
        name=name,
        rate_limit_per_sec=1.0,
        burst_size=1.0,
        increase_factor=0.1,
        min_rate=0.1,
        max_rate=50.0,
    )

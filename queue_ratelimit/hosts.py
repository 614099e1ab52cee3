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

__all__ = ["BY_HOST", "HOST_PREFIX", "host_config", "host_integration"]

BY_HOST: Final = "queue_ratelimit:by-host"
"""Pass as an HTTP client's ``integration`` to limit each request by its host."""

HOST_PREFIX: Final = "host-"
"""The names of integrations made for a host start with this."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNSAFE = re.compile(r"[^a-z0-9_-]")
_MAX_NAME = 64


def host_integration(
    host: str, port: int | None, scheme: str, known_hosts: Mapping[str, str]
) -> str:
    """The integration name for ``scheme://host:port``: the one ``known_hosts`` maps the
    host to, else ``host-<host>`` (dots as ``_``, a port other than the scheme's default
    as ``-<port>``; a name past 64 characters ends in a digest of the host)."""
    host = host.lower().rstrip(".").strip("[]")
    if port is not None and port == _DEFAULT_PORTS.get(scheme.lower()):
        port = None
    if port is None and host in known_hosts:
        return known_hosts[host]
    name = HOST_PREFIX + _UNSAFE.sub("-", host.replace(".", "_").replace(":", "_"))
    if port is not None:
        name += f"-{port}"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(f"{host}:{port}".encode()).hexdigest()[:12]
        name = f"{name[: _MAX_NAME - 13]}-{digest}"
    return name


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

"""Endpoint groups: the requests of an API that its upstream limits apart from the rest.

GitHub limits its search endpoints to 30 requests a minute besides the 5,000 an hour of the
rest of the REST API, and GraphQL in points of its own; Slack limits each method by tier.
An integration's ``endpoints`` route such requests to an integration of their own:

    github = github.replace(endpoints=(Endpoint("github-search", paths=("/search/",)),))

The HTTP clients (``requests``, ``httpx``, ``aiohttp``) pick the group from each request's
method and path: the first endpoint whose method matches (none listed: any) and one of
whose path prefixes starts the path. In TOML::

    [[github.endpoints]]
    integration = "github-search"
    paths = ["/search/"]

Pure: config and matching only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from queue_ratelimit.errors import ConfigError

__all__ = ["Endpoint", "endpoints_from", "route"]

_INTEGRATION = re.compile(r"^[a-z][a-z0-9_-]*$")
_METHOD = re.compile(r"^[A-Z]{1,16}$")


@dataclass(frozen=True)
class Endpoint:
    """Requests to send to ``integration`` instead: those to a path starting with one of
    ``paths`` (``/search/``), of one of ``methods`` (none: any method)."""

    integration: str
    paths: tuple[str, ...]
    methods: tuple[str, ...] = ()

    def matches(self, method: str, path: str) -> bool:
        """Whether a request of ``method`` to ``path`` is one of this group's."""
        if self.methods and method.upper() not in self.methods:
            return False
        return any(path.startswith(prefix) for prefix in self.paths)

    def to_dict(self) -> dict[str, object]:
        """As an override file spells it."""
        return {
            "integration": self.integration,
            "paths": list(self.paths),
            "methods": list(self.methods),
        }


def route(endpoints: Sequence[Endpoint], method: str, path: str) -> str | None:
    """The integration of the first endpoint a request matches, else None."""
    for endpoint in endpoints:
        if endpoint.matches(method, path):
            return endpoint.integration
    return None


def endpoints_from(value: object, integration: str | None) -> tuple[Endpoint, ...]:
    """Validated endpoints from ``Endpoint``\\ s or tables of their fields.

    Raises:
        ConfigError: naming ``endpoints`` and what is wrong.
    """
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ConfigError(integration, "endpoints", value, "must be a list of endpoint tables")
    made = []
    for item in value:
        fields = item.to_dict() if isinstance(item, Endpoint) else item
        if not isinstance(fields, Mapping):
            raise ConfigError(integration, "endpoints", item, "each must be a table")
        unknown = set(fields) - {"integration", "paths", "methods"}
        if unknown:
            raise ConfigError(
                integration,
                "endpoints",
                item,
                f"unknown keys {sorted(unknown)}: give integration, paths and (optionally) methods",
            )
        target = fields.get("integration")
        if not isinstance(target, str) or not _INTEGRATION.match(target) or target == integration:
            raise ConfigError(
                integration, "endpoints.integration", target, "name another integration"
            )
        paths = _strings(fields.get("paths"), integration, "endpoints.paths")
        if not paths or not all(path.startswith("/") for path in paths):
            raise ConfigError(integration, "endpoints.paths", paths, "give path prefixes from /")
        methods = tuple(
            m.upper() for m in _strings(fields.get("methods", ()), integration, "endpoints.methods")
        )
        if not all(_METHOD.match(method) for method in methods):
            raise ConfigError(integration, "endpoints.methods", methods, "give HTTP methods")
        made.append(Endpoint(target, paths, methods))
    return tuple(made)


def _strings(value: object, integration: str | None, field: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(integration, field, value, "must be a list of strings")
    items = tuple(value)
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(integration, field, value, "must be a list of strings")
    return items

"""The built-in integrations: conservative defaults for each vendor, with their sources.

``BUILTIN_INTEGRATIONS`` maps names to configs (each with its vendor's
:class:`~queue_ratelimit.Dialect`); ``BUILTIN_SOURCES`` gives, per integration, the vendor's
published figure and where it comes from; ``BUILTIN_NOTES`` how the values follow from it;
``BUILTIN_HOSTS`` which API host each serves (for ``BY_HOST`` clients). The documentation's
built-in table is generated from these. The vendors are grouped by kind, one module each.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from queue_ratelimit.builtins import ai, business, code, google, messaging, work
from queue_ratelimit.builtins.model import Builtin
from queue_ratelimit.config import IntegrationConfig

__all__ = ["BUILTIN_HOSTS", "BUILTIN_INTEGRATIONS", "BUILTIN_NOTES", "BUILTIN_SOURCES", "Builtin"]

_BUILTINS: tuple[Builtin, ...] = (
    *work.BUILTINS,
    *google.BUILTINS,
    *messaging.BUILTINS,
    *code.BUILTINS,
    *ai.BUILTINS,
    *business.BUILTINS,
)

BUILTIN_INTEGRATIONS: Mapping[str, IntegrationConfig] = MappingProxyType(
    {builtin.config.name: builtin.config for builtin in _BUILTINS}
)
"""Read-only built-in configurations by name; :data:`BUILTIN_SOURCES` says where each
figure comes from."""

BUILTIN_SOURCES: Mapping[str, str] = MappingProxyType(
    {builtin.config.name: builtin.source for builtin in _BUILTINS}
)
"""Read-only, by integration name: the vendor's published limit behind each built-in, in
one line with the URL that documents it (none where no figure is published)."""

BUILTIN_NOTES: Mapping[str, str] = MappingProxyType(
    {builtin.config.name: builtin.basis for builtin in _BUILTINS}
)
"""Read-only, by integration name: how each built-in's values follow from its source
(an empty string when they follow plainly)."""

BUILTIN_HOSTS: Mapping[str, str] = MappingProxyType(
    {host: builtin.config.name for builtin in _BUILTINS for host in builtin.hosts}
)
"""Read-only, by API host name: the built-in integration a ``BY_HOST`` client uses for it."""

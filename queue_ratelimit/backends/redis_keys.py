"""The limiter's key layout in Redis (layout 4; ``docs/redis.md`` writes it down).

Each limiter key has a hash tag of its own, so the tenants of one integration spread over
every shard of a Redis Cluster while the keys one decision touches share one slot:

* ``{P:I}:state.v5`` and ``{P:I}:leases``: the integration's own key (no tenant);
* ``{P:I:t=T}:state.v5`` and ``{P:I:t=T}:leases``: tenant ``T`` of integration ``I``;
* ``{P:I}:t=T:state.v5`` and ``{P:I}:t=T:leases``: tenant ``T`` of an integration with an
  integration-wide limit (a chain), under the integration's own tag, so that one decision
  touches its tenant's key and ``{P:I}:app.v5``, the integration-wide level, in one slot;
* ``{P:I}:fair.v1`` and ``{P:I}:active.v1``: with fair share, each tenant's share bucket (a
  hash) and until when it counts as active (a sorted set), by the tenant's part of its key
  names (``""``: the integration's own key);
* ``{P:I}:breaker.v3``: the integration's circuit breaker, shared by its tenants;
* ``{P:I}:meta``: the integration's limits and settings as its workers last wrote them, so
  the operator tools show and act on keys without the workers' config file;
* ``{P:I}:overrides.v1``: the operators' run-time overrides (a hash: ``=`` for the
  integration, ``=T`` for tenant ``T``, each an ``Override``'s JSON), read with the breaker.

``P`` is the prefix (letters, digits and ``_.:-``); ``I`` an integration name
(``[a-z][a-z0-9_-]*``, never a ``:``); ``T`` the tenant percent-encoded (so ``:``, ``{``,
``}`` and spaces cannot reach into another key's name), or ``#`` and its SHA-256 when the
encoding is longer than 128 characters (the state then keeps the raw name). ``scan`` lists
such a key as ``#<sha256>``, and that text names it back (a tenant spelled exactly ``#`` and 64
lowercase hex digits is taken for a digest).
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple
from urllib.parse import quote, unquote

# suffixes named for the layouts of limiter.lua, which other versions do not read: a fleet
# that mixes versions never has them overwrite each other's state, each keeps its own
STATE, LEASES, BREAKER, META = ":state.v5", ":leases", ":breaker.v3", ":meta"
APP = ":app.v5"  # a chain's integration-wide level (the state's layout)
FAIR, ACTIVE = ":fair.v1", ":active.v1"  # fair share: tenants' share buckets, active times
OVERRIDES = ":overrides.v1"
_TENANT = ":t="
_MAX_TENANT_KEY = 128
_DIGEST = re.compile(r"#[0-9a-f]{64}")
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]{1,128}")  # what quote() leaves as it is


class KeyNames(NamedTuple):
    """The Redis keys of one limiter key, and the tenant's name when the keys hold only its
    digest (the script stores it in the state), else ``""``."""

    state: str
    leases: str
    stored_name: str


def _tenant_part(tenant: str) -> tuple[str, str]:
    """The tenant's part of its key names, and the name its state must keep (``""`` when the
    part spells it)."""
    if _PLAIN.fullmatch(tenant):  # nothing to encode (most names): the fast path
        return tenant, ""
    if _DIGEST.fullmatch(tenant):  # a key listed by its digest (scan), named back by it
        return tenant, ""
    part = quote(tenant, safe="")
    if len(part) > _MAX_TENANT_KEY:
        return "#" + hashlib.sha256(tenant.encode()).hexdigest(), tenant
    return part, ""


def _tag(prefix: str, integration: str, part: str | None = None) -> str:
    """The hash tag (with its braces) of the integration's own keys, or of a tenant's by its
    ``part``."""
    inner = integration if part is None else f"{integration}{_TENANT}{part}"
    return f"{{{prefix}:{inner}}}"


def key_names(prefix: str, integration: str, tenant: str | None, chained: bool = False) -> KeyNames:
    """The state and leases keys of ``(integration, tenant)``; ``chained``: of an integration
    with an integration-wide level, whose tenants' keys share its tag (and slot)."""
    part, stored_name = (None, "") if tenant is None else _tenant_part(tenant)
    if chained and part is not None:
        base = f"{_tag(prefix, integration)}{_TENANT}{part}"
    else:
        base = _tag(prefix, integration, part)
    return KeyNames(base + STATE, base + LEASES, stored_name)


def app_key(prefix: str, integration: str) -> str:
    """The state key of the integration-wide level of a chain."""
    return _tag(prefix, integration) + APP


def fair_keys(prefix: str, integration: str) -> tuple[str, str]:
    """Fair share's keys: the share buckets and the tenants' active times."""
    base = _tag(prefix, integration)
    return base + FAIR, base + ACTIVE


def member(tenant: str | None) -> str:
    """A tenant's name in fair share's keys: its part of its key names (``""``: none)."""
    return "" if tenant is None else _tenant_part(tenant)[0]


def integration_keys(prefix: str, integration: str) -> tuple[str, str, str]:
    """The integration's breaker, description and overrides keys."""
    base = _tag(prefix, integration)
    return base + BREAKER, base + META, base + OVERRIDES


def patterns(prefix: str, integration: str | None = None) -> list[str]:
    """``SCAN MATCH`` patterns covering every key of ``integration`` (or of the prefix).

    ``[`` ``]`` ``*`` ``?`` and ``\\`` in the prefix are never there (it is validated), so it
    needs no escaping."""
    if integration is None:
        return [f"{{{prefix}:*"]
    # its own keys ({P:I}...) and its tenants' ({P:I:t=...}) in one pass: I holds no ':'
    return [f"{{{prefix}:{integration}[}}:]*"]


def parse_state_key(prefix: str, key: str) -> tuple[str, str | None] | None:
    """``(integration, tenant)`` of a state key of this layout and prefix, else ``None``.

    A tenant kept by its digest is given as ``#<sha256>`` (``snapshot`` tells its name)."""
    head = f"{{{prefix}:"
    if not (key.startswith(head) and key.endswith(STATE)):
        return None
    inner = key[len(head) : -len(STATE)]
    if inner.endswith("}"):
        inner = inner[:-1]
    elif "}" + _TENANT in inner:  # a chained tenant's: {P:I}:t=T
        inner = inner.replace("}" + _TENANT, _TENANT, 1)
    else:
        return None
    if "}" in inner or "{" in inner:
        return None
    integration, found, part = inner.partition(_TENANT)
    if not integration or ":" in integration:
        return None
    if not found:
        return integration, None
    return integration, part if part.startswith("#") or "%" not in part else unquote(part)

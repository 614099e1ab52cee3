"""The limiter's key layout in Redis (layout 5; ``docs/redis.md`` writes it down).

The tenants of one integration spread over every shard of a Redis Cluster, in ``SHARDS``
hash tags per integration, while the keys one decision touches share one slot:

* ``{P:I}:state.v5`` and ``{P:I}:leases``: the integration's own key (no tenant);
* ``{P:I:s=N}:t=T:state.v5`` and ``{P:I:s=N}:t=T:leases``: tenant ``T`` of integration
  ``I``, in shard ``N`` (``0 <= N < SHARDS``, from a CRC-32 of the tenant's part);
* ``{P:I:s=N}:version.v1``: a copy of the overrides' version (a hash, field ``#v``) in the
  shard's slot, which each decision of those tenants checks in its own script call, as the
  integration's own key checks the overrides hash (``redis_overrides.py`` keeps it);
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
import zlib
from typing import NamedTuple
from urllib.parse import quote, unquote

# suffixes named for the layouts of limiter.lua, which other versions do not read: a fleet
# that mixes versions never has them overwrite each other's state, each keeps its own
STATE, LEASES, BREAKER, META = ":state.v5", ":leases", ":breaker.v3", ":meta"
APP = ":app.v5"  # a chain's integration-wide level (the state's layout)
FAIR, ACTIVE = ":fair.v1", ":active.v1"  # fair share: tenants' share buckets, active times
OVERRIDES = ":overrides.v1"
COPY = ":version.v1"  # the overrides' version, copied into each shard's slot
SHARDS = 1024  # hash tags per integration its tenants spread over (the layout: fixed)
_TENANT, _SHARD = ":t=", ":s="
_MAX_TENANT_KEY = 128
_DIGEST = re.compile(r"#[0-9a-f]{64}")
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]{1,128}")  # what quote() leaves as it is


class KeyNames(NamedTuple):
    """The Redis keys of one limiter key, the tenant's name when the keys hold only its
    digest (the script stores it in the state), else ``""``, and the key holding the
    overrides' version in the key's slot (the overrides hash, or its shard's copy)."""

    state: str
    leases: str
    stored_name: str
    version: str


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


def _tag(prefix: str, integration: str) -> str:
    """The hash tag (with its braces) of the integration's own keys."""
    return f"{{{prefix}:{integration}}}"


def _shard_tag(prefix: str, integration: str, shard: int) -> str:
    return f"{{{prefix}:{integration}{_SHARD}{shard}}}"


def _shard(part: str) -> int:
    return zlib.crc32(part.encode()) % SHARDS


def key_names(prefix: str, integration: str, tenant: str | None, chained: bool = False) -> KeyNames:
    """The state and leases keys of ``(integration, tenant)``; ``chained``: of an integration
    with an integration-wide level, whose tenants' keys share its tag (and slot)."""
    own = _tag(prefix, integration)
    if tenant is None:
        return KeyNames(own + STATE, own + LEASES, "", own + OVERRIDES)
    part, stored_name = _tenant_part(tenant)
    if chained:
        base = f"{own}{_TENANT}{part}"
        return KeyNames(base + STATE, base + LEASES, stored_name, own + OVERRIDES)
    shard = _shard_tag(prefix, integration, _shard(part))
    base = f"{shard}{_TENANT}{part}"
    return KeyNames(base + STATE, base + LEASES, stored_name, shard + COPY)


def version_keys(prefix: str, integration: str) -> list[str]:
    """Every shard's copy of the overrides' version (``set`` writes them all)."""
    return [_shard_tag(prefix, integration, shard) + COPY for shard in range(SHARDS)]


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
    # its own keys ({P:I}...) and its shards' ({P:I:s=...}) in one pass: I holds no ':'
    return [f"{{{prefix}:{integration}[}}:]*"]


def parse_state_key(prefix: str, key: str) -> tuple[str, str | None] | None:
    """``(integration, tenant)`` of a state key of this layout and prefix, else ``None``.

    A tenant kept by its digest is given as ``#<sha256>`` (``snapshot`` tells its name)."""
    head = f"{{{prefix}:"
    if not (key.startswith(head) and key.endswith(STATE)):
        return None
    tag, _, rest = key[len(head) : -len(STATE)].partition("}")
    integration, sharded, shard = tag.partition(_SHARD)
    if not integration or ":" in integration or "{" in integration:
        return None
    if not rest:
        return (integration, None) if not sharded else None  # its own key: {P:I}:state.v5
    part = rest.removeprefix(_TENANT)
    if part == rest or not part or "}" in part or "{" in part:
        return None
    if sharded and shard != str(_shard(part)):  # a tenant's key in its shard's tag only
        return None
    return integration, part if part.startswith("#") or "%" not in part else unquote(part)

"""The operators' run-time overrides in Redis (``policy/overrides.py`` holds their rules).

They live in the integration's overrides hash (``{P:I}:overrides.v1``: field ``=`` the
integration's, ``=T`` tenant ``T``'s, each an ``Override``'s JSON) with ``#v``, their version:
each change sets it to the server's time in microseconds, or one more than it was if that is
later, so it only ever grows (also across a ``purge``, which deletes the hash). Each decision
passes the version its process read; the script answers ``STALE`` when the key it checks
holds a later one, and the process reads the hash again and decides once more.

A decision checks the key in its own slot: the hash for the integration's own key and a
chain's tenants, else the copy of ``#v`` in its tenant's shard (``{P:I:s=N}:version.v1``),
which every change raises in all shards after writing the hash. A decision that finds its
copy missing (none written yet, or its day passed) or behind its own version writes its own
there: a process's view is at most ``breaker_poll`` old, and a copy is missing only when no
change came within its day. Keeping a copy in every shard a decision used also keeps the
keys one decision passes present together while a Cluster slot is migrated (two present
keys are served; a missing one makes the script wait for the migration's end).

``RedisOverrides`` is a part of ``RedisBackend`` (``redis.py``), kept apart as
``RedisTools`` is.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from queue_ratelimit.backends import redis_keys as layout
from queue_ratelimit.backends import redis_wire as wire
from queue_ratelimit.errors import BackendError
from queue_ratelimit.policy.overrides import Override

__all__ = ["COPY_TTL", "RedisOverrides"]

log = logging.getLogger(__name__)

COPY_TTL = 86400
"""Seconds a copy of the overrides' version lives after it was last written."""

_CHANGE = """local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local version = math.max((tonumber(redis.call('HGET', KEYS[1], '#v')) or 0) + 1, now)
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
version = string.format('%.0f', version)
redis.call('HSET', KEYS[1], '#v', version)
return version"""
"""One change of the overrides hash: the field written (or deleted), ``#v`` moved on."""

_RAISE = """local held = tonumber(redis.call('HGET', KEYS[1], '#v'))
if held and held > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], '#v', ARGV[1])
return redis.call('EXPIRE', KEYS[1], ARGV[2])"""
"""A shard's copy raised to a version (two operators' copies may land in either order)."""


class RedisOverrides:
    """The overrides' side of ``RedisBackend`` (see the module)."""

    client: Any
    prefix: str
    _views: dict[str, wire.View]

    def set_override(self, integration: str, tenant: str | None, override: Override | None) -> None:
        """See ``Backend.set_override``: the hash changed, then its version raised in every
        shard's copy; every process's next decision of any key sees the change. A shard that
        does not answer is logged (a WARNING), not raised: the change is stored, and its
        tenants obey it within ``breaker_poll``."""
        held = layout.integration_keys(self.prefix, integration)[2]
        field = wire.override_field(tenant)
        written = "" if override is None else override.to_json()
        try:
            version = wire.text(self.client.eval(_CHANGE, 1, held, field, written))
        except redis.RedisError as exc:
            raise BackendError(f"redis override failed for {integration!r}: {exc}") from exc
        self._views.pop(integration, None)
        try:
            copies = self.client.pipeline(transaction=False)  # (a cluster's: per node)
            for key in layout.version_keys(self.prefix, integration):
                # (EVAL by name: a cluster pipeline has no eval(), but routes EVAL by its key)
                copies.execute_command("EVAL", _RAISE, 1, key, version, COPY_TTL)
            copies.execute()
        except redis.RedisError as exc:  # (a shard down: its tenants' decisions fail anyway)
            log.warning(
                "queue_ratelimit: the override of %r is stored, but its version did not "
                "reach every shard (%s): tenants there obey it within their workers' "
                "breaker_poll, and the next decision there that has read it copies it",
                integration,
                exc,
            )

    def overrides(self, integration: str) -> dict[str | None, Override]:
        """See ``Backend.overrides``."""
        held = layout.integration_keys(self.prefix, integration)[2]
        try:
            pairs: dict[Any, Any] = self.client.hgetall(held)
        except redis.RedisError as exc:
            raise BackendError(f"redis overrides failed for {integration!r}: {exc}") from exc
        flat = [part for pair in pairs.items() for part in pair]
        return dict(wire.overrides_from(flat))

"""What the operator tools do with a ``RedisBackend``: list keys (``SCAN`` on every master),
read many at once (one script call per thousand keys on a server, pipelined per key on a
cluster, two round trips in flight), sum their counts, reset and purge them, and read the
description the workers stored.

``RedisTools`` is a part of ``RedisBackend`` (``redis.py``: the decisions), kept apart so
each file holds one concern; it builds on the breaker's view and the script's arguments
(``redis_breaker.py``, ``redis_args.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from queue_ratelimit.backends import redis_keys as layout
from queue_ratelimit.backends import redis_wire as wire
from queue_ratelimit.backends.redis_breaker import RedisBreaker
from queue_ratelimit.backends.redis_steps import Steps
from queue_ratelimit.errors import BackendError
from queue_ratelimit.policy.state import Plan, Snapshot

__all__ = ["RedisTools"]

_T = TypeVar("_T")
_PIPELINE = 1000
"""Keys read per round trip when the tools read many."""


def batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class RedisTools(RedisBreaker):
    """The operator tools' side of ``RedisBackend`` (see the module)."""

    # the backend's own (redis.py), which these use
    _bounded: Callable[[Plan, wire.View, str | None], Plan]

    def scan(self, integration: str | None = None) -> Iterator[tuple[str, str | None]]:
        """Every limiter key in Redis under this prefix (on every master of a cluster):
        ``(integration, tenant)`` pairs.

        A tenant stored by its digest (over 128 characters once encoded) is listed as
        ``#<sha256>``; ``snapshot`` of that key tells its name. On a cluster a master that
        does not answer is named in the ``BackendError`` raised after the others' keys.
        """
        seen: set[tuple[str, str | None]] = set()
        for pattern in layout.patterns(self.prefix, integration):
            for raw in self._scan_keys(pattern):
                key = wire.text(raw)
                parsed = layout.parse_state_key(self.prefix, key)
                if parsed is None:
                    continue
                if parsed[1] is not None and key.startswith(
                    f"{{{self.prefix}:{parsed[0]}}}:"
                ):  # a chain's tenant: its integration's keys are named so
                    self._chained.add(parsed[0])
                if parsed not in seen:  # (a key left from before a chain: listed once)
                    seen.add(parsed)
                    yield parsed

    def _scan_keys(self, pattern: str) -> Iterator[Any]:
        """``SCAN MATCH pattern`` over the server, or over each master of a cluster."""
        client = self.client
        if not isinstance(client, RedisCluster):
            try:
                yield from client.scan_iter(match=pattern, count=2000)
            except redis.RedisError as exc:
                raise BackendError(f"redis scan failed: {exc}") from exc
            return
        failed = []
        for node in client.get_primaries():  # type: ignore[no-untyped-call]
            try:
                yield from client.scan_iter(match=pattern, count=2000, target_nodes=node)
            except redis.RedisError as exc:
                failed.append(f"{node.name} ({exc})")
        if failed:
            raise BackendError(f"redis scan failed on {', '.join(failed)}")

    def snapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        """See ``Backend.snapshot``: the key, then its integration's breaker (read afresh,
        which refreshes what this process's decisions are passed)."""
        return self._drive(self._snapshot_steps(integration, tenant, plan))

    def _snapshot_steps(self, integration: str, tenant: str | None, plan: Plan) -> Steps[Snapshot]:
        self._note(integration, plan)  # (a chain's tenants are named under its tag)
        view = yield from self._view_steps(integration, plan)
        if view.overrides:  # the key as its decisions see it: within the overrides' bounds
            plan = self._bounded(plan, view, tenant)
        args = self._key_args(integration, tenant, self._blob("snapshot", plan), leases=True)
        reply = yield "snapshot", integration, args
        return wire.snapshot_from(reply, view, plan)

    def app_snapshot(self, integration: str, plan: Plan) -> Snapshot:
        """See ``Backend.app_snapshot``."""
        return self._drive(self._app_snapshot_steps(integration, plan))

    def _app_snapshot_steps(self, integration: str, plan: Plan) -> Steps[Snapshot]:
        assert plan.app is not None
        self._note(integration, plan)
        view, _, _ = yield from self._breaker_steps("view", integration, plan)  # (no description:
        key = layout.app_key(self.prefix, integration)  # a tool's config may differ)
        reply = yield "snapshot", integration, (1, key, self._blob("snapshot", plan.app))
        return wire.snapshot_from(reply, view, plan.app)

    def snapshots(
        self, integration: str, tenants: Sequence[str | None], plan: Plan
    ) -> list[Snapshot]:
        """See ``Backend.snapshots``: the breaker read once (its description is not written:
        a tool's config may differ from the workers'), then the keys, pipelined."""
        self._note(integration, plan)
        view = self._breaker_op("view", integration, plan)[0] if tenants else wire.CLEAN
        return self._key_snapshots(
            integration, tenants, plan, lambda reply: wire.snapshot_from(reply, view, plan)
        )

    def _key_snapshots(
        self,
        integration: str,
        tenants: Sequence[str | None],
        plan: Plan,
        read: Callable[[Any], _T],
    ) -> list[_T]:
        """The script's snapshots of many keys, each ``read``: ``_PIPELINE`` keys per round
        trip (one call on a server; on a cluster, pipelined calls, a key each), two round
        trips in flight (Redis runs one while this process reads the other's answers)."""
        leases = plan.max_concurrent is not None  # (none without a concurrency limit)
        if isinstance(self.client, RedisCluster):  # keys of many slots: a call per key
            blob = self._blob("snapshot", plan)

            def batch_of(tenants: list[str | None]) -> list[_T]:
                calls = [self._key_args(integration, t, blob, leases=leases) for t in tenants]
                return [read(reply) for reply in self._pipelined("snapshot", integration, calls)]

        else:  # one server: a call per batch of keys
            blob = self._blob("snapshots", plan, wire.pack([2.0 if leases else 1.0]))

            def batch_of(tenants: list[str | None]) -> list[_T]:
                keys: list[str] = []
                for tenant in tenants:
                    names = self._names(integration, tenant)
                    keys.extend((names.state, names.leases) if leases else (names.state,))
                replies = self._run("snapshots", integration, (len(keys), *keys, blob))
                return [read(reply) for reply in replies]

        split = list(batches(iter(tenants), _PIPELINE))
        if len(split) < 2:
            return [each for batch in split for each in batch_of(batch)]
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="qrl-read") as pool:
            return [each for done in pool.map(batch_of, split) for each in done]

    def _pipelined(self, op: str, integration: str, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Many EVALSHAs in one pipeline (a cluster client sends each node its share); the
        script is loaded first when a server lacks it."""
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for args in calls:
                pipe.execute_command("EVALSHA", self._sha, *args)  # (evalsha: blocked on
                # a cluster pipeline; the command itself is routed by its keys)
            try:
                return list(pipe.execute())
            except NoScriptError as exc:
                if attempt == 2:
                    raise BackendError(f"redis {op} failed for {integration!r}: {exc}") from exc
                self._load_script(op, integration)
            except redis.RedisError as exc:
                raise BackendError(f"redis {op} failed for {integration!r}: {exc}") from exc
            finally:
                pipe.reset()
        raise AssertionError("unreachable")

    def _load_script(self, op: str, integration: str) -> None:
        try:
            self.client.script_load(self._source)  # (a cluster client: on every master)
        except redis.RedisError as exc:
            raise BackendError(f"redis {op} failed for {integration!r}: {exc}") from exc

    def reset(self, integration: str, tenant: str | None) -> None:
        """See ``Backend.reset``: under either naming (a chain's tenants share its tag); the
        integration's own key (``tenant`` None) with a chain's integration-wide level and
        fair shares."""
        plain = layout.key_names(self.prefix, integration, tenant)
        chained = layout.key_names(self.prefix, integration, tenant, chained=True)
        try:
            for names in {plain, chained}:  # (one DEL per slot: a cluster client refuses more)
                self.client.delete(names.state, names.leases)
            if tenant is None:
                app = layout.app_key(self.prefix, integration)
                self.client.delete(app, *layout.fair_keys(self.prefix, integration))
        except redis.RedisError as exc:
            raise BackendError(f"redis reset failed for {integration!r}: {exc}") from exc

    def purge(self, integration: str) -> None:
        """See ``Backend.purge``: every key of the integration and its tenants."""
        try:
            for pattern in layout.patterns(self.prefix, integration):
                for batch in batches(self._scan_keys(pattern), 500):
                    self.client.delete(*batch)  # (a cluster client splits it per slot)
        except redis.RedisError as exc:
            raise BackendError(f"redis purge failed for {integration!r}: {exc}") from exc
        self._views.pop(integration, None)

    def stats(self, integration: str) -> dict[str, int]:
        """See ``Backend.stats``: the counts of every key of the integration, summed."""
        totals = dict.fromkeys(wire.EVENTS, 0)
        tenants = [tenant for _, tenant in self.scan(integration)]
        for counts in self._key_snapshots(integration, tenants, wire.NO_PLAN, wire.counts_from):
            for event, value in counts.items():
                totals[event] += value
        return {event: value for event, value in totals.items() if value}

    def stored_plan(self, integration: str) -> Plan | None:
        """See ``Backend.stored_plan``: the description its workers last wrote."""
        try:
            stored = self.client.get(layout.integration_keys(self.prefix, integration)[1])
        except redis.RedisError as exc:
            raise BackendError(f"redis read failed for {integration!r}: {exc}") from exc
        if stored is None:
            return None
        try:
            return wire.plan_from_json(wire.text(stored))
        except ValueError:
            return None

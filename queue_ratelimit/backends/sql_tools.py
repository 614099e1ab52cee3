"""What the operator tools do with a SQL store: snapshots of keys and of a chain's
integration-wide level, list, count, reset and purge keys, read the plan the workers stored,
set the breaker and the operators' overrides.

``SQLTools`` is a part of ``SQLBackend`` (``sql.py``: the decisions), on the rows of
``sql_rows.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from queue_ratelimit.backends import state_json as sj
from queue_ratelimit.backends.redis_wire import plan_from_json
from queue_ratelimit.backends.sql_rows import APP, KEY, SQLRows, column, tenant_of
from queue_ratelimit.policy import aimd
from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy.overrides import Override
from queue_ratelimit.policy.state import Plan, Snapshot

__all__ = ["SQLTools"]


class SQLTools(SQLRows):
    """The operator tools' side of ``SQLBackend`` (see the module)."""

    def _forget_claims(self, integration: str) -> None:
        """An operator's change: this process's claimed slots (``sql_claims``) go too."""
        if self._claims is not None:
            self._claims.drop(integration)

    def snapshot(self, integration: str, tenant: str | None, plan: Plan) -> Snapshot:
        """See ``Backend.snapshot``."""
        with self._tx(write=False) as conn:
            now = self._now(conn)
            held = self._overrides_of(self._override_rows(conn, integration))
            plan = self._bounded_plans.bounded(plan, held, tenant)
            state = self._live(conn, integration, KEY, tenant, now)
            return aimd.snapshot(state, self._breaker(conn, integration), now, plan.limits)

    def app_snapshot(self, integration: str, plan: Plan) -> Snapshot:
        """See ``Backend.app_snapshot``."""
        assert plan.app is not None
        with self._tx(write=False) as conn:
            now = self._now(conn)
            state = self._live(conn, integration, APP, None, now)
            return aimd.snapshot(state, self._breaker(conn, integration), now, plan.app.limits)

    def snapshots(
        self, integration: str, tenants: Sequence[str | None], plan: Plan
    ) -> list[Snapshot]:
        """See ``Backend.snapshots``."""
        with self._tx(write=False) as conn:
            now = self._now(conn)
            breaker = self._breaker(conn, integration)
            return [
                aimd.snapshot(
                    self._live(conn, integration, KEY, tenant, now), breaker, now, plan.limits
                )
                for tenant in tenants
            ]

    def scan(self, integration: str | None = None) -> Iterator[tuple[str, str | None]]:
        """Every live key, of ``integration`` only when given."""
        query = "SELECT integration, tenant FROM qrl_keys WHERE scope = ? AND level = ?"
        query += " AND expires > ? AND state <> ''"
        with self._tx(write=False) as conn:
            args: tuple[Any, ...] = (self.prefix, KEY, self._now(conn))
            if integration is not None:
                query += " AND integration = ?"
                args += (integration,)
            rows = self._exec(conn, query + " ORDER BY integration, tenant", args).fetchall()
        return iter([(name, tenant_of(tenant)) for name, tenant in rows])

    def stats(self, integration: str) -> dict[str, int]:
        """See ``Backend.stats``."""
        totals: dict[str, int] = {}
        with self._tx(write=False) as conn:
            rows = self._exec(
                conn,
                "SELECT state FROM qrl_keys"
                " WHERE scope = ? AND integration = ? AND level = ? AND expires > ?",
                (self.prefix, integration, KEY, self._now(conn)),
            ).fetchall()
        for (text,) in rows:
            with contextlib.suppress(ValueError):  # (a damaged row counts nothing)
                for event, value in sj.state_from(text).counts.items():
                    totals[event] = totals.get(event, 0) + value
        return totals

    def stored_plan(self, integration: str) -> Plan | None:
        """See ``Backend.stored_plan``."""
        with self._tx(write=False) as conn:
            text = self._integration_row(conn, integration)[2]
        if text is None:
            return None
        try:
            return plan_from_json(text)
        except ValueError:
            return None

    def reset(self, integration: str, tenant: str | None) -> None:
        """See ``Backend.reset``."""
        self._forget_claims(integration)
        with self._tx() as conn:
            where = (self.prefix, integration)
            self._exec(
                conn,
                "DELETE FROM qrl_keys WHERE scope = ? AND integration = ? AND level = ?"
                " AND tenant = ?",
                (*where, KEY, column(tenant)),
            )
            if tenant is None:  # (with a chain's integration-wide level and fair shares)
                self._exec(
                    conn,
                    "DELETE FROM qrl_keys WHERE scope = ? AND integration = ? AND level = ?",
                    (*where, APP),
                )
                self._exec(
                    conn,
                    "UPDATE qrl_integrations SET fair = NULL WHERE scope = ? AND integration = ?",
                    where,
                )

    def purge(self, integration: str) -> None:
        """See ``Backend.purge``."""
        self._forget_claims(integration)
        with self._tx() as conn:
            if self.lock_rows:  # (the keys' rows in the order decisions lock them)
                self._exec(
                    conn,
                    "SELECT 1 FROM qrl_keys WHERE scope = ? AND integration = ?"
                    " ORDER BY level, tenant" + self.lock_rows,
                    (self.prefix, integration),
                ).fetchall()
            for table in ("qrl_keys", "qrl_integrations", "qrl_overrides"):
                self._exec(
                    conn,
                    f"DELETE FROM {table} WHERE scope = ? AND integration = ?",
                    (self.prefix, integration),
                )
        self._plans_written.pop(integration, None)

    def set_breaker(self, integration: str, state: str, open_seconds: float) -> None:
        """See ``Backend.set_breaker``."""
        self._forget_claims(integration)
        with self._tx() as conn:
            breaker = brk.force(state, self._now(conn), open_seconds)
            text = None if breaker.is_default else sj.breaker_text(breaker)
            self._put_integration(conn, integration, breaker=text)

    def set_override(self, integration: str, tenant: str | None, override: Override | None) -> None:
        """See ``Backend.set_override``."""
        self._forget_claims(integration)
        with self._tx() as conn:
            key = (self.prefix, integration, column(tenant))
            if override is None:
                self._exec(
                    conn,
                    "DELETE FROM qrl_overrides WHERE scope = ? AND integration = ? AND tenant = ?",
                    key,
                )
            else:
                self._exec(
                    conn,
                    "INSERT INTO qrl_overrides (scope, integration, tenant, body)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (scope, integration, tenant)"
                    " DO UPDATE SET body = excluded.body",
                    (*key, override.to_json()),
                )

    def overrides(self, integration: str) -> dict[str | None, Override]:
        """See ``Backend.overrides``."""
        with self._tx(write=False) as conn:
            return self._overrides_of(self._override_rows(conn, integration))

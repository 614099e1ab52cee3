"""The operator's side of ``Limiter``: the breaker and run-time overrides an operator sets,
and what the tools read (stats, snapshots) or forget (reset).

``LimiterTools`` is a part of ``Limiter`` (``limiter.py``: the decisions and reports), kept
apart so each file holds one concern; it uses the limiter's backend, outage guard and
configs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from queue_ratelimit import signals
from queue_ratelimit.backends.base import Backend
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import InvalidRequest
from queue_ratelimit.outage import OutageGuard
from queue_ratelimit.plans import Prepared
from queue_ratelimit.policy.overrides import Override
from queue_ratelimit.policy.state import Snapshot

__all__ = ["LimiterTools", "check_name"]


def check_name(what: str, name: object) -> None:
    """A key name must be a string that UTF-8 can encode (``json.loads`` can produce a lone
    surrogate such as ``"\\ud800"``, which no backend can store)."""
    try:
        if isinstance(name, str):
            name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{what} {name!r} cannot be encoded as UTF-8: {exc.reason}") from exc


class LimiterTools:
    """The operator's calls of ``Limiter`` (see the module)."""

    backend: Backend
    configs: Mapping[str, IntegrationConfig]
    _guard: OutageGuard
    config: Callable[[str], IntegrationConfig]
    _resolve: Callable[[str, str | None], Prepared]

    def set_breaker(self, integration: str, state: str, open_seconds: float | None = None) -> None:
        """Force the integration's breaker ``"open"`` (for ``open_seconds``, default the
        config's ``breaker_open_seconds``) or ``"closed"``: an operator's override."""
        config = self.config(integration)
        seconds = config.breaker_open_seconds if open_seconds is None else open_seconds
        self.backend.set_breaker(integration, state, seconds)
        event = signals.breaker_opened if state == "open" else signals.breaker_closed
        signals.emit(event, self, integration=integration, tenant=None, forced=True)

    def set_override(
        self,
        integration: str,
        tenant: str | None = None,
        *,
        max_rate: float | None = None,
        min_rate: float | None = None,
        by: str = "",
    ) -> Override:
        """Bound the rate of ``integration`` (or of one ``tenant``'s key) at run time, for
        every worker sharing the backend, until ``clear_override``: AIMD goes on within
        ``[min_rate, max_rate]`` (``policy/overrides.py``). ``by`` names who did it: the
        ``override_set`` signal and its log line carry it.

        The integration need not be configured in this process (an operator's tool acts on
        what the workers use).

        Raises:
            ConfigError: bounds that are not rates.
            InvalidRequest: a name no backend can store.
        """
        self._named(integration, tenant)
        override = Override(max_rate, min_rate, by, time.time())
        self.backend.set_override(integration, tenant, override)
        signals.emit(
            signals.override_set,
            self,
            integration=integration,
            tenant=tenant,
            max_rate=max_rate,
            min_rate=min_rate,
            by=by,
        )
        return override

    def clear_override(self, integration: str, tenant: str | None = None, *, by: str = "") -> None:
        """Remove the bounds ``set_override`` set: the config's hold again."""
        self._named(integration, tenant)
        self.backend.set_override(integration, tenant, None)
        signals.emit(signals.override_cleared, self, integration=integration, tenant=tenant, by=by)

    def overrides(self, integration: str) -> dict[str | None, Override]:
        """The overrides set on ``integration`` now, by tenant (None: the integration's)."""
        self._named(integration, None)
        return self.backend.overrides(integration)

    @staticmethod
    def _named(integration: str, tenant: str | None) -> None:
        if not isinstance(integration, str) or not integration:
            raise InvalidRequest(f"integration must be a non-empty string, not {integration!r}")
        check_name("integration", integration)
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise InvalidRequest(f"{integration}: tenant must be a non-empty string or None")
        check_name("tenant", tenant)

    def stats(self, integration: str) -> dict[str, int]:
        """The fleet-wide event counts (``backoffs``, ``requeues``, ...) of the integration's
        live keys, summed."""
        self.config(integration)
        return self.backend.stats(integration)

    def snapshot(self, integration: str, tenant: str | None = None) -> Snapshot:
        """The key's current rate, tokens, cooldown, reserved tokens and live leases.

        Raises:
            BackendUnavailable: the shared backend is down (a queue's breaker poll then
                leaves it alone until the next probe instead of waiting out its timeouts).
        """
        prepared = self._resolve(integration, tenant)
        return self._guard.call(
            prepared,
            tenant,
            lambda backend, plan: backend.snapshot(integration, tenant, plan),
            fallback=False,
        )

    def app_snapshot(self, integration: str) -> Snapshot:
        """The integration-wide level of an integration with an ``app_limit``: its rate,
        tokens and cooldown (``docs/limits.md``).

        Raises:
            InvalidRequest: the integration has no ``app_limit``.
            BackendUnavailable: the shared backend is down.
        """
        prepared = self._resolve(integration, None)
        if prepared.plan.app is None:
            raise InvalidRequest(f"{integration}: has no app_limit (no integration-wide level)")
        return self._guard.call(
            prepared,
            None,
            lambda backend, plan: backend.app_snapshot(integration, plan),
            fallback=False,
        )

    def reset(self, integration: str, tenant: str | None = None) -> None:
        """Forget the key's learned rate, debts, cooldown and leases."""
        self._resolve(integration, tenant)
        self.backend.reset(integration, tenant)

"""The ``graphql-cost`` dialect of the testing upstream: a leaky points budget per bucket.

Like Shopify's GraphQL Admin API: each bucket holds at most ``limit`` points and restores
``limit / window`` per second; a call asks for ``?cost=N`` points (1 by default) and, when
served, spends ``?actual=M`` (default N). A call asking for more than is available is
answered ``200`` with ``errors[].extensions.code == "THROTTLED"``; every answer states the
budget in ``extensions.cost`` (``requestedQueryCost``, ``actualQueryCost``,
``throttleStatus {maximumAvailable, currentlyAvailable, restoreRate}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CostBuckets"]


@dataclass
class _Budget:
    available: float
    at: float


class CostBuckets:
    """The points budget of every bucket (not thread-safe: the upstream holds its lock)."""

    def __init__(self, limit: float, window: float) -> None:
        self.limit = limit
        self.restore = limit / window
        self._budgets: dict[str, _Budget] = {}
        self.throttled = 0

    def answer(
        self, bucket: str, now: float, requested: float, actual: float
    ) -> tuple[bool, dict[str, object]]:
        """Whether the call is served, and the JSON body that says so."""
        budget = self._budgets.setdefault(bucket, _Budget(self.limit, now))
        budget.available = min(self.limit, budget.available + (now - budget.at) * self.restore)
        budget.at = now
        served = requested <= budget.available
        if served:
            budget.available -= actual
        else:
            self.throttled += 1
        cost = {
            "requestedQueryCost": requested,
            "actualQueryCost": actual if served else None,
            "throttleStatus": {
                "maximumAvailable": self.limit,
                "currentlyAvailable": math.floor(budget.available),
                "restoreRate": self.restore,
            },
        }
        body: dict[str, object] = {"extensions": {"cost": cost}}
        if served:
            body["data"] = {"node": {"id": bucket}}
        else:
            body["errors"] = [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]
        return served, body

"""A GraphQL points budget stated in bodies keeps a fleet inside it: no THROTTLED answer.

Four processes share one Redis-backed limiter and post 300 queries costing 2 to 10 points to
the testing upstream's ``graphql-cost`` dialect (Shopify's: a leaky budget of 200 points
restoring 100 per second, ``extensions.cost`` on every answer, a ``200`` with ``THROTTLED``
when a query asks for more than is left). The integration's own points limit starts at 150/s,
above the restore rate, and may climb far past it: only the budget read from the bodies (fed
forward as a quota, each call's actual cost correcting its estimate) keeps the fleet inside
it. (Without ``cost_fields`` in the dialect the same run met 14 THROTTLED answers.)
"""

from __future__ import annotations

import multiprocessing
import random
import uuid
from typing import Any

from queue_ratelimit.testing import HiddenLimitUpstream
from tests.integration import fleet

CALLS = 300
PROCS = 4


def test_a_fleet_reading_graphql_costs_meets_no_throttle_and_loses_nothing(
    redis_url: str, key_prefix: str
) -> None:
    dice = random.Random(7)
    calls = [(uuid.uuid4().hex[:10], dice.randint(2, 10)) for _ in range(CALLS)]
    ctx = multiprocessing.get_context("spawn")
    out: Any = ctx.Queue()
    with HiddenLimitUpstream(200, 2.0, headers="graphql-cost") as upstream:
        procs = [
            ctx.Process(
                target=fleet.run_graphql,
                args=(redis_url, key_prefix, upstream.url, calls[i::PROCS], out),
            )
            for i in range(PROCS)
        ]
        for proc in procs:
            proc.start()
        attempts = sum(out.get(timeout=180) for _ in procs)
        for proc in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0
        assert upstream.served_once({call_id for call_id, _ in calls})  # 0 lost, 0 twice
        assert upstream.throttled() == 0
        assert attempts >= CALLS

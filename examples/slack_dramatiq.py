"""Slack with Dramatiq: ``RateLimitMiddleware``, one limit per workspace, 429s requeued.

Slack limits each Web API method per workspace and app, in tiers (Tier 3: 50+ calls per
minute), and answers 429 with ``Retry-After``. The built-in ``slack`` config starts near
Tier 3. The actor declares ``integration="slack"`` and a ``tenant`` (the workspace); its
queue is named like the integration, so an open breaker pauses it on every worker. A real
Dramatiq worker runs in this process on Dramatiq's in-memory ``StubBroker``.

Real API: ``SLACK_TOKEN=xoxb-... SLACK_CHANNEL=C0123456789 python examples/slack_dramatiq.py``
reads that channel's info (``conversations.info``, Tier 3) 30 times, about 40 s at the
built-in limit.

Without ``SLACK_TOKEN``: the actor reads channels of two workspaces from a local upstream
that allows 12 calls/s per workspace and answers 429 with ``Retry-After``, as Slack does.

For a fleet, use a ``RedisBroker`` and a ``Limiter(RedisBackend(url))`` shared by every
worker (docs/dramatiq.md).
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import requests
from _support import Api, Tally, configs_for, dramatiq_worker, open_api, report, require
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from queue_ratelimit import Limiter, MemoryBackend
from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.integrations.dramatiq import RateLimitMiddleware

TASKS = 30
LOCAL = {"rate_limit_per_sec": 8.0, "increase_factor": 1.0, "max_rate": 40.0}

slack = requests.Session()  # the token and the adapter are set in main()


class SlackError(Exception):
    """Slack answered ``ok: false`` (it does so with HTTP 200)."""


def read_channel(team: str, channel: str, url: str) -> str:
    """Read one channel's info; the limit is per workspace (the tenant)."""
    answer = slack.get(url, timeout=10)  # a 429 requeues the message
    answer.raise_for_status()
    if answer.json().get("ok") is False:
        raise SlackError(answer.json().get("error"))
    return channel


def make_broker(limiter: Limiter) -> tuple[StubBroker, Any]:
    """The broker with its middleware, and the actor (declared after the middleware)."""
    broker = StubBroker()
    broker.add_middleware(RateLimitMiddleware(limiter))
    broker.add_middleware(Results(backend=StubBackend()))
    dramatiq.set_broker(broker)
    declare = dramatiq.actor(
        queue_name="slack",  # named like the integration: the breaker can pause it
        integration="slack",
        tenant=lambda team, channel, url: team,
        store_results=True,
    )
    return broker, declare(read_channel)


def channels(api: Api) -> list[tuple[str, str, str]]:
    """(workspace, channel, URL to read) for each message."""
    if api.local:  # two workspaces: two limits, and two buckets of the local upstream
        keys = [(("T-a", "T-b")[n % 2], f"C-{n}") for n in range(TASKS)]
        return [(team, channel, api.local_url(team, channel)) for team, channel in keys]
    channel = require("SLACK_CHANNEL")
    url = f"https://slack.com/api/conversations.info?channel={channel}"
    return [("workspace", channel, url) for _ in range(TASKS)]


def main() -> int:
    token = os.environ.get("SLACK_TOKEN")
    with open_api(token, hidden_limit=12, dialect="retry-after") as api:
        limiter = Limiter(MemoryBackend(), configs_for(api, "slack", LOCAL))
        slack.headers["Authorization"] = f"Bearer {api.token}"
        slack.mount(api.prefix("https://slack.com/"), RateLimitedAdapter(limiter, "slack"))
        broker, actor = make_broker(limiter)
        work = channels(api)
        with Tally("slack") as tally, dramatiq_worker(broker):
            messages = [actor.send(*args) for args in work]
            done = [message.get_result(block=True, timeout=60_000) for message in messages]
        return report("slack_dramatiq", [channel for _, channel, _ in work], done, tally, api)


if __name__ == "__main__":
    raise SystemExit(main())

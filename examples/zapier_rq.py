"""Zapier with RQ: events posted to a Zap's catch hook, paced by the fleet's one limit.

Zapier accepts 20,000 webhook requests per 5 minutes per user and answers 429 beyond;
the built-in ``zapier`` config stays far below that (1 to 10 requests/s), since everything
that posts to the same user's hooks shares the figure. A catch hook's URL is itself the
secret: it stays in this process and never goes into a job's arguments (RQ keeps those in
Redis).

The job is marked with ``@rate_limited("zapier")`` and run by a ``RateLimitedSimpleWorker``
in this process (``rq worker -w queue_ratelimit.integrations.rq.RateLimitedWorker
--with-scheduler zapier`` in production). **RQ needs Redis**: ``$REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) holds the queue and the limiter state, under names of this
run's own (``zapier-<run id>``) that are deleted afterwards.

Real API: ``ZAPIER_HOOK_URL=https://hooks.zapier.com/hooks/catch/<id>/<key>/
python examples/zapier_rq.py`` posts 20 events (``{"event": "event-<n>"}``) to that hook:
your Zap runs 20 times.

Without ``ZAPIER_HOOK_URL``: the events go to a local upstream that allows 12 calls/s and
answers a bare 429 (we assume Zapier's carry no ``Retry-After``; the limiter then opens a
cooldown of ``cooldown_multiplier`` request intervals).
"""

from __future__ import annotations

import os

import redis
import requests
from _support import (
    Api,
    Tally,
    configs_for,
    forget_rq_run,
    open_api,
    redis_url,
    report,
    rq_work,
    run_id,
)
from rq import Queue

from queue_ratelimit import Limiter
from queue_ratelimit.backends.redis import RedisBackend
from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.integrations.rq import RateLimitedSimpleWorker, rate_limited

TASKS = 20
LOCAL = {"rate_limit_per_sec": 8.0, "increase_factor": 1.0, "max_rate": 40.0}


class Hook:
    """The Zap's catch hook, set once at start; its URL never leaves this process."""

    def __init__(self) -> None:
        self.api: Api | None = None

    def url_for(self, event: str) -> str:
        if self.api is None:
            raise RuntimeError("the hook is not set")
        return self.api.local_url("zapier", event) if self.api.local else self.api.token


class HookError(Exception):
    """Posting to the hook failed; unlike requests' own errors, it does not quote the URL."""


hook = Hook()
zapier = requests.Session()  # the adapter is mounted in main()


@rate_limited("zapier")
def post_event(event: str) -> str:
    """Post one event to the hook; one limit for everything posting to it."""
    try:
        answer = zapier.post(hook.url_for(event), json={"event": event}, timeout=10)
    except requests.RequestException as exc:  # its message names the URL: keep it out of logs
        raise HookError(f"posting {event} failed: {type(exc).__name__}") from None
    if not answer.ok:  # a 429 never gets here: it requeues the job
        raise HookError(f"posting {event}: the hook answered {answer.status_code}")
    return event


def main() -> int:
    run = run_id()  # this run's queue and Redis keys
    hook_url = os.environ.get("ZAPIER_HOOK_URL")
    with open_api(hook_url, hidden_limit=12, dialect="none", require_token=False) as api:
        hook.api = api
        url = redis_url()
        backend = RedisBackend(url, prefix=f"qrl-example-{run}")
        limiter = Limiter(backend, configs_for(api, "zapier", LOCAL))
        zapier.mount(api.prefix("https://hooks.zapier.com/"), RateLimitedAdapter(limiter, "zapier"))
        connection = redis.Redis.from_url(url)
        queue = Queue(f"zapier-{run}", connection=connection)

        def worker() -> RateLimitedSimpleWorker:
            return RateLimitedSimpleWorker([queue], connection=connection, limiter=limiter)

        events = [f"event-{n}" for n in range(TASKS)]
        jobs = [queue.enqueue(post_event, event) for event in events]
        try:
            with Tally("zapier") as tally:
                done = rq_work(queue, worker, jobs)
        finally:
            forget_rq_run(queue, jobs, backend)
        return report("zapier_rq", events, done, tally, api)


if __name__ == "__main__":
    # RQ runs only functions it can import, never __main__'s: run this file as its module
    from zapier_rq import main as run

    raise SystemExit(run())

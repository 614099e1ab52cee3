"""Vanta with RQ: a SAMPLE to customise, with job options and the IETF RateLimit headers.

Vanta documents its limits per group of endpoints, and they differ between groups; the
built-in ``vanta`` config is a conservative guess (0.5 requests/s, at most 1/s) and the
endpoint below is an assumption. Before you rely on it, customise:

* the limit: the figure Vanta documents for the endpoints you call, as an override in
  ``queue-ratelimit.toml`` (``[vanta]`` / ``max_rate = 1.5``) or the environment
  (``QUEUE_RATELIMIT__VANTA__MAX_RATE=1.5``); ``load_configs()`` reads both. Endpoint groups
  with different limits are best declared as integrations of their own (``vanta_people``);
* the endpoint (``VANTA_URL``, default ``https://api.vanta.com/v1/people?pageSize=10``);
* the token: Vanta's API takes an OAuth access token (``POST /oauth/token`` with your
  application's client credentials; it lasts an hour) as ``Authorization: Bearer``.

Shows the job options of ``@rate_limited``: a ``requeue_budget`` and a ``max_wait`` of the
job's own. The job is run by a ``RateLimitedSimpleWorker`` in this process (``rq worker -w
queue_ratelimit.integrations.rq.RateLimitedWorker --with-scheduler vanta`` in production).
**RQ needs Redis**: ``$REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) holds the queue
and the limiter state, under names of this run's own (``vanta-<run id>``) that are deleted
afterwards.

Real API: ``VANTA_TOKEN=<access token> python examples/vanta_rq.py`` reads ``VANTA_URL``
20 times at the configured limit (about 30 s at the built-in one).

Without ``VANTA_TOKEN``: the jobs call a local upstream that allows 10 calls per 1-second
window and publishes the IETF ``RateLimit-*`` fields (what Vanta sends is not assumed
here; the limiter reads this dialect as well as ``X-RateLimit-*`` and ``Retry-After``).
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

VANTA_URL = "https://api.vanta.com/v1/people?pageSize=10"  # CUSTOMISE: the endpoint you read
TASKS = 20
LOCAL = {"rate_limit_per_sec": 8.0, "increase_factor": 1.0, "max_rate": 40.0}

vanta = requests.Session()  # the token and the adapter are set in main()


@rate_limited("vanta", requeue_budget=30, max_wait=0.5)
def read_page(key: str, url: str) -> str:
    """Read one page; after 30 requeues without a slot the job fails visibly."""
    vanta.get(url, timeout=10).raise_for_status()  # a 429 requeues the job
    return key


def reads(api: Api) -> list[tuple[str, str]]:
    """(key, URL to read) for each job."""
    if api.local:
        return [(f"page-{n}", api.local_url("vanta", f"page-{n}")) for n in range(TASKS)]
    url = os.environ.get("VANTA_URL", VANTA_URL)
    return [(f"read-{n}", url) for n in range(TASKS)]


def main() -> int:
    token = os.environ.get("VANTA_TOKEN")
    run = run_id()  # this run's queue and Redis keys
    with open_api(token, hidden_limit=10, dialect="ietf") as api:
        url = redis_url()
        backend = RedisBackend(url, prefix=f"qrl-example-{run}")
        limiter = Limiter(backend, configs_for(api, "vanta", LOCAL))
        vanta.headers["Authorization"] = f"Bearer {api.token}"
        vanta.mount(api.prefix("https://api.vanta.com/"), RateLimitedAdapter(limiter, "vanta"))
        connection = redis.Redis.from_url(url)
        queue = Queue(f"vanta-{run}", connection=connection)

        def worker() -> RateLimitedSimpleWorker:
            return RateLimitedSimpleWorker([queue], connection=connection, limiter=limiter)

        work = reads(api)
        jobs = [queue.enqueue(read_page, *args) for args in work]
        try:
            with Tally("vanta") as tally:
                done = rq_work(queue, worker, jobs)
        finally:
            forget_rq_run(queue, jobs, backend)
        return report("vanta_rq", [key for key, _ in work], done, tally, api)


if __name__ == "__main__":
    # RQ runs only functions it can import, never __main__'s: run this file as its module
    from vanta_rq import main as run

    raise SystemExit(run())

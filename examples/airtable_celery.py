"""Airtable with Celery: a bare 429 (no Retry-After) still gets the right cooldown.

Airtable allows 5 requests per second per base and, after a 429, wants 30 seconds of
silence; its 429 carries no ``Retry-After``. The built-in ``airtable`` config therefore
opens a cooldown of ``cooldown_multiplier`` request intervals on a backoff (120 intervals
at 4/s = 30 s), and the task is requeued for that long. The limit is per base (the
tenant). A real Celery worker runs in this process on the in-memory broker.

Real API: ``AIRTABLE_TOKEN=pat... AIRTABLE_BASE_ID=app... AIRTABLE_TABLE=Tasks
python examples/airtable_celery.py`` reads the table's first page 30 times, at the
built-in limit (at most 4/s).

Without ``AIRTABLE_TOKEN``: the tasks read records of two bases from a local upstream that
allows 12 calls/s per base and answers a bare 429, as Airtable does; the local config
scales the 30-second penalty down to about a second.
"""

from __future__ import annotations

import os

import requests
from _support import Api, Tally, celery_worker, configs_for, open_api, report, require
from celery import Celery

from queue_ratelimit import Limiter, MemoryBackend
from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.integrations.celery import (
    RateLimitedTask,
    configure,
    install,
    integration_router,
)

TASKS = 30
LOCAL = {
    "rate_limit_per_sec": 8.0,
    "increase_factor": 1.0,
    "max_rate": 40.0,
    "cooldown_multiplier": 12.0,  # about 1 s at 12 calls/s, instead of Airtable's 30 s
    "max_backoff": 2.0,
}

airtable = requests.Session()  # the token and the adapter are set in main()


class ReadRecords(RateLimitedTask):
    """Read one page of records; the limit is per base (the tenant)."""

    name = "examples.airtable.read_records"
    integration = "airtable"

    def tenant(self, base: str, key: str, url: str) -> str:
        return base

    def run(self, base: str, key: str, url: str) -> str:
        airtable.get(url, timeout=10).raise_for_status()  # a 429 requeues the task
        return key


def reads(api: Api) -> list[tuple[str, str, str]]:
    """(base, key, URL to read) for each task."""
    if api.local:  # two bases: two limits, and two buckets of the local upstream
        keys = [(("app-a", "app-b")[n % 2], f"record-{n}") for n in range(TASKS)]
        return [(base, key, api.local_url(base, key)) for base, key in keys]
    base, table = require("AIRTABLE_BASE_ID"), require("AIRTABLE_TABLE")
    url = f"https://api.airtable.com/v0/{base}/{table}?pageSize=10"
    return [(base, f"read-{n}", url) for n in range(TASKS)]


def make_app(limiter: Limiter) -> Celery:
    """The Celery app as a real deployment sets it up (its broker aside)."""
    app = Celery("airtable_example", broker="memory://", backend="cache+memory://")
    app.conf.update(
        task_routes=(integration_router,),  # ReadRecords goes to the queue "airtable"
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_transport_options={"polling_interval": 0.05},
    )
    configure(app, limiter)  # or app.conf.queue_ratelimit_redis_url = "redis://..."
    install(app)
    app.register_task(ReadRecords())
    return app


def main() -> int:
    token = os.environ.get("AIRTABLE_TOKEN")
    with open_api(token, hidden_limit=12, dialect="none") as api:
        limiter = Limiter(MemoryBackend(), configs_for(api, "airtable", LOCAL))
        airtable.headers["Authorization"] = f"Bearer {api.token}"
        adapter = RateLimitedAdapter(limiter, "airtable", pool_maxsize=4)
        airtable.mount(api.prefix("https://api.airtable.com/"), adapter)
        work = reads(api)
        app = make_app(limiter)
        with Tally("airtable") as tally, celery_worker(app, ["airtable"]):
            task = app.tasks[ReadRecords.name]
            results = [task.delay(*args) for args in work]
            done = [result.get(timeout=60) for result in results]
        return report("airtable_celery", [key for _, key, _ in work], done, tally, api)


if __name__ == "__main__":
    raise SystemExit(main())

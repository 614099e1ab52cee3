"""Fieldguide with Celery: a SAMPLE to customise, with a decorated task and one shared limit.

We know of no published Fieldguide rate limit, so the built-in ``fieldguide`` config is a
conservative guess (0.5 requests/s, at most 1/s), and the endpoint below is a placeholder.
Before you rely on it, customise:

* the limit: agree a figure with Fieldguide, then override the built-in in
  ``queue-ratelimit.toml`` (``[fieldguide]`` / ``max_rate = 2.0``) or the environment
  (``QUEUE_RATELIMIT__FIELDGUIDE__MAX_RATE=2.0``); ``load_configs()`` reads both;
* the endpoint (``FIELDGUIDE_URL``) and how the token is sent (a Bearer token is assumed);
* how its 429s look: a ``Retry-After`` is assumed; without one the limiter opens a
  cooldown of ``cooldown_multiplier`` request intervals.

Shows the decorator form, ``@app.task(base=RateLimitedTask, integration=..., bind=True)``,
and a ``requeue_budget`` of the task's own. A real Celery worker runs in this process on the
in-memory broker.

Real API: ``FIELDGUIDE_TOKEN=... FIELDGUIDE_URL=https://<your Fieldguide API endpoint>
python examples/fieldguide_celery.py`` reads that URL 20 times at the configured limit
(about 40 s at the built-in 0.5/s).

Without ``FIELDGUIDE_TOKEN``: the tasks read from a local upstream that allows 10 calls/s
and answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import os
from typing import Any

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

TASKS = 20
LOCAL = {"rate_limit_per_sec": 6.0, "increase_factor": 1.0, "max_rate": 30.0}

app = Celery("fieldguide_example", broker="memory://", backend="cache+memory://")
app.conf.update(
    task_routes=(integration_router,),  # the task goes to the queue "fieldguide"
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_transport_options={"polling_interval": 0.05},
)
install(app)
fieldguide = requests.Session()  # the token and the adapter are set in main()


@app.task(base=RateLimitedTask, integration="fieldguide", requeue_budget=20, bind=True)
def sync_engagement(self: Any, engagement: str, url: str) -> str:
    """Read one engagement; one limit for every task (no tenant)."""
    fieldguide.get(url, timeout=10).raise_for_status()  # a 429 requeues the task
    return engagement


def engagements(api: Api) -> list[tuple[str, str]]:
    """(engagement, URL to read) for each task."""
    if api.local:
        return [(f"eng-{n}", api.local_url("fieldguide", f"eng-{n}")) for n in range(TASKS)]
    url = require("FIELDGUIDE_URL")  # CUSTOMISE: the endpoint your sync reads
    return [(f"read-{n}", url) for n in range(TASKS)]


def main() -> int:
    token = os.environ.get("FIELDGUIDE_TOKEN")
    with open_api(token, hidden_limit=10, dialect="retry-after") as api:
        limiter = Limiter(MemoryBackend(), configs_for(api, "fieldguide", LOCAL))
        configure(app, limiter)  # or app.conf.queue_ratelimit_redis_url = "redis://..."
        fieldguide.headers["Authorization"] = f"Bearer {api.token}"  # CUSTOMISE: the auth
        adapter = RateLimitedAdapter(limiter, "fieldguide", pool_maxsize=4)
        fieldguide.mount(api.prefix("https://"), adapter)  # CUSTOMISE: your API's base URL
        work = engagements(api)
        with Tally("fieldguide") as tally, celery_worker(app, ["fieldguide"]):
            results = [sync_engagement.delay(*args) for args in work]
            done = [result.get(timeout=120) for result in results]
        return report("fieldguide_celery", [key for key, _ in work], done, tally, api)


if __name__ == "__main__":
    raise SystemExit(main())

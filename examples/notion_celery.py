"""Notion with Celery: one limit per workspace, a 429 sends the task back to the broker.

Shows ``RateLimitedTask`` with a ``tenant`` (Notion limits each integration token, so each
workspace gets its own limit), the ``RateLimitedAdapter`` on a ``requests`` session, and
``integration_router`` (the tasks go to the queue ``notion``). A real Celery worker runs in
this process on the in-memory broker, so no server is needed.

Real API: ``NOTION_TOKEN=secret_... NOTION_PAGE_IDS=<id>,<id> python examples/notion_celery.py``
reads those pages (30 reads, cycling through the ids) with the built-in ``notion`` limits,
about 3 requests/s.

Without ``NOTION_TOKEN``: the same tasks read pages of two workspaces from a local upstream
that allows 12 calls/s per workspace and answers 429 with ``Retry-After``, as Notion does.

For a fleet, set ``app.conf.queue_ratelimit_redis_url`` so every worker shares the limits.
"""

from __future__ import annotations

import os
from itertools import cycle, islice

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

NOTION_API = "https://api.notion.com/v1"
NOTION_VERSION = "2022-06-28"
TASKS = 30
LOCAL = {"rate_limit_per_sec": 8.0, "increase_factor": 1.0, "max_rate": 40.0}

notion = requests.Session()  # headers and the adapter are set in main()


class SyncPage(RateLimitedTask):
    """Read one Notion page; the limit is per workspace (the tenant)."""

    name = "examples.notion.sync_page"
    integration = "notion"

    def tenant(self, workspace: str, page_id: str, url: str) -> str:
        return workspace

    def run(self, workspace: str, page_id: str, url: str) -> str:
        notion.get(url, timeout=10).raise_for_status()  # a 429 requeues the task
        return page_id


def pages(api: Api) -> list[tuple[str, str, str]]:
    """(workspace, page id, URL to read it) for each task."""
    if api.local:  # two workspaces: two limits, and two buckets of the local upstream
        ids = [(("ws-a", "ws-b")[n % 2], f"page-{n}") for n in range(TASKS)]
        return [(ws, page, api.local_url(ws, page)) for ws, page in ids]
    ids = [("workspace", page) for page in require("NOTION_PAGE_IDS").split(",") if page]
    return [(ws, page, f"{NOTION_API}/pages/{page}") for ws, page in islice(cycle(ids), TASKS)]


def make_app(limiter: Limiter) -> Celery:
    """The Celery app as a real deployment sets it up (its broker aside)."""
    app = Celery("notion_example", broker="memory://", backend="cache+memory://")
    app.conf.update(
        task_routes=(integration_router,),  # SyncPage goes to the queue "notion"
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_transport_options={"polling_interval": 0.05},
    )
    configure(app, limiter)  # or app.conf.queue_ratelimit_redis_url = "redis://..."
    install(app)  # an open breaker pauses the queue on every worker
    app.register_task(SyncPage())
    return app


def main() -> int:
    token = os.environ.get("NOTION_TOKEN")
    with open_api(token, hidden_limit=12, dialect="retry-after") as api:
        limiter = Limiter(MemoryBackend(), configs_for(api, "notion", LOCAL))
        notion.headers.update(
            {"Authorization": f"Bearer {api.token}", "Notion-Version": NOTION_VERSION}
        )
        adapter = RateLimitedAdapter(limiter, "notion", pool_maxsize=4)
        notion.mount(api.prefix("https://api.notion.com/"), adapter)
        work = pages(api)
        app = make_app(limiter)
        with Tally("notion") as tally, celery_worker(app, ["notion"]):
            task = app.tasks[SyncPage.name]
            results = [task.delay(*args) for args in work]
            done = [result.get(timeout=60) for result in results]
        return report("notion_celery", [page for _, page, _ in work], done, tally, api)


if __name__ == "__main__":
    raise SystemExit(main())

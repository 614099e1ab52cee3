"""GitHub with RQ: quota headers pace the jobs before any 429; a worker in this process.

GitHub publishes its quota on every answer (``X-RateLimit-Remaining`` and ``-Reset``); the
limiter reads them and spreads the rest of the window over the calls, so a fleet that
shares one token meets few or no 429s. The built-in ``github`` config also treats a 403 as
a backoff when it carries rate-limit headers (GitHub's secondary limits), and never a
plain 403 (a permission error).

The job is marked with ``@rate_limited("github")`` and run by a
``RateLimitedSimpleWorker`` in this process (``rq worker -w
queue_ratelimit.integrations.rq.RateLimitedWorker --with-scheduler github`` in production).
**RQ needs Redis**: ``$REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) holds the queue
and the limiter state, under names of this run's own (``github-<run id>``) that are deleted
afterwards. In production name the queue like the integration (``github``), so an open
breaker pauses it on every worker.

Real API: ``GITHUB_TOKEN=ghp_... python examples/github_rq.py`` reads the 20 latest
commits of ``GITHUB_REPO`` (default python/cpython) one per job, at the built-in limit
(about 1.4 requests/s, GitHub's 5,000 per hour).

Without ``GITHUB_TOKEN``: the jobs call a local upstream that allows 15 calls per 1-second
window and sends GitHub's headers.
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

github = requests.Session()  # the token and the adapter are set in main()
github.headers.update(
    {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
)


@rate_limited("github")
def read_commit(key: str, url: str) -> str:
    """Read one commit; one limit for the token (no tenant)."""
    github.get(url, timeout=10).raise_for_status()  # a 429 requeues the job
    return key


def commits(api: Api) -> list[tuple[str, str]]:
    """(key, URL to read) for each job."""
    if api.local:
        return [(f"commit-{n}", api.local_url("github", f"commit-{n}")) for n in range(TASKS)]
    repo = os.environ.get("GITHUB_REPO", "python/cpython")
    base = f"https://api.github.com/repos/{repo}/commits?per_page=1"
    return [(f"commit-{n}", f"{base}&page={n + 1}") for n in range(TASKS)]


def main() -> int:
    token = os.environ.get("GITHUB_TOKEN")
    run = run_id()  # this run's queue and Redis keys
    with open_api(token, hidden_limit=15, dialect="github") as api:
        url = redis_url()
        backend = RedisBackend(url, prefix=f"qrl-example-{run}")
        limiter = Limiter(backend, configs_for(api, "github", LOCAL))
        github.headers["Authorization"] = f"Bearer {api.token}"
        github.mount(api.prefix("https://api.github.com/"), RateLimitedAdapter(limiter, "github"))
        connection = redis.Redis.from_url(url)
        queue = Queue(f"github-{run}", connection=connection)

        def worker() -> RateLimitedSimpleWorker:
            return RateLimitedSimpleWorker([queue], connection=connection, limiter=limiter)

        work = commits(api)
        jobs = [queue.enqueue(read_commit, *args) for args in work]
        try:
            with Tally("github") as tally:
                done = rq_work(queue, worker, jobs)
        finally:
            forget_rq_run(queue, jobs, backend)
        return report("github_rq", [key for key, _ in work], done, tally, api)


if __name__ == "__main__":
    # RQ runs only functions it can import, never __main__'s: run this file as its module
    from github_rq import main as run

    raise SystemExit(run())

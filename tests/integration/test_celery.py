"""RateLimitedTask on real Celery workers and real brokers, against a hidden-limit upstream:
what is Celery's own (the scenarios every framework shares: test_scenarios.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import redis

from queue_ratelimit.integrations.celery_due import scope
from tests.integration.celery_harness import capp, celery_rig, wait_all
from tests.support import refused_at_start, wait_until


def test_a_countdown_beyond_the_visibility_timeout_waits_in_redis_and_runs_once(
    redis_url: str,
) -> None:
    with celery_rig("redis", redis_url, visibility_timeout=4, limit=100) as rig:
        rig.limiter.on_backoff(capp.NOTION, retry_after=12.0)  # requeued for ~12 s
        w1 = rig.start_worker("w1", [capp.NOTION], concurrency=2)
        (task_id,) = ids = [rig.send("tests.sync_notion", [1], capp.NOTION)]
        wait_until(lambda: rig.results(ids)[0].state == "RETRY", timeout=30)
        # it waits in the limiter's Redis, not in the broker: no delivery is held unacked
        # (a worker starting past the visibility timeout would take it back and run it
        # twice) and no ETA message sits in a worker's memory
        due = redis.Redis.from_url(redis_url)
        key = f"{{{capp.PREFIX}:tasks:{scope(rig.client)}}}:due"
        wait_until(lambda: due.zcard(key) == 1 and not rig.held(), timeout=30)
        assert rig.waiting(capp.NOTION) == 0
        w2 = rig.start_worker("w2", [capp.NOTION], concurrency=2)
        (value,) = wait_all(rig.results(ids), timeout=60)
        assert isinstance(value, dict)
        wait_until(lambda: rig.idle([w1, w2], [capp.NOTION]), timeout=30)  # nothing left to run
        assert rig.upstream.served_once({task_id})
        assert due.zcard(key) == 0


def test_a_revoked_parked_task_never_runs_and_leaves_the_due_set(redis_url: str) -> None:
    with celery_rig("redis", redis_url, limit=100) as rig:
        w1 = rig.start_worker("w1", [capp.NOTION], concurrency=2)
        # parked for ~4 s: a cooldown set once the worker is up (set before, it ran out
        # while a slow machine started the worker, and the task simply ran)
        rig.limiter.on_backoff(capp.NOTION, retry_after=4.0)
        (task_id,) = ids = [rig.send("tests.sync_notion", [1], capp.NOTION)]
        due = redis.Redis.from_url(redis_url)
        key = f"{{{capp.PREFIX}:tasks:{scope(rig.client)}}}:due"
        wait_until(lambda: due.zcard(key) == 1, timeout=30)
        rig.client.control.revoke(task_id)
        # its copy is promoted when due, reaches the worker, which refuses it as revoked
        # (task_revoked): the due set lets it go instead of publishing it again and again
        wait_until(lambda: rig.results(ids)[0].state == "REVOKED", timeout=30)
        wait_until(lambda: due.zcard(key) == 0, timeout=10)
        wait_until(lambda: rig.idle([w1], [capp.NOTION]), timeout=30)
        assert rig.upstream.count(200) == 0


def test_a_body_catching_exception_cannot_swallow_a_requeue(redis_url: str) -> None:
    with celery_rig("redis", redis_url, limit=1, window=30.0) as rig:
        rig.start_worker("w1", [capp.NOTION], concurrency=2)
        ids = [rig.send("tests.swallowing", [], capp.NOTION) for _ in range(2)]
        wait_until(lambda: rig.upstream.count(429) >= 1, timeout=30)
        wait_until(
            lambda: sorted(r.state for r in rig.results(ids)) == ["RETRY", "SUCCESS"], timeout=30
        )
        done = next(r for r in rig.results(ids) if r.state == "SUCCESS")
        assert done.get(timeout=5) == "ok"  # and the other was requeued, not "swallowed"


def test_a_tasks_cost_is_a_method_a_value_or_a_function_of_its_arguments() -> None:
    from celery import Celery

    from queue_ratelimit.integrations.celery import RateLimitedTask

    app = Celery("costs")

    @app.task(
        base=RateLimitedTask, integration="openai", cost=lambda p: {"tokens": len(p)}, shared=False
    )
    def summarise(prompt: str) -> str:
        return prompt

    @app.task(base=RateLimitedTask, integration="openai", cost={"tokens": 7.0}, shared=False)
    def fixed(prompt: str) -> str:
        return prompt

    class Embed(RateLimitedTask):
        integration = "openai"

        def cost(self, n: int) -> dict[str, float]:
            return {"tokens": 2.0 * n}

    class Plain(RateLimitedTask):
        integration = "openai"

    def cost(task: RateLimitedTask, *args: object) -> object:
        return task.task_limits.call(args, {}).cost

    assert cost(summarise, "abcd") == {"tokens": 4}
    assert cost(fixed, "x") == {"tokens": 7.0}
    assert cost(Embed(), 5) == {"tokens": 10.0}
    assert cost(Plain()) == 1.0  # one request by default


def test_a_task_with_an_impossible_cost_fails_the_check_at_start() -> None:
    from celery import Celery

    from queue_ratelimit import BUILTIN_INTEGRATIONS, ConfigError, Limiter
    from queue_ratelimit.integrations.celery import RateLimitedTask, check_tasks, configure

    app = Celery("checks")
    configure(app, Limiter(configs=BUILTIN_INTEGRATIONS))
    for name in [n for n in app.tasks if not n.startswith(__name__)]:
        app.tasks.pop(name)  # shared tasks of the other apps this process imported

    @app.task(base=RateLimitedTask, integration="openai", cost={"tokens": 1e12}, shared=False)
    def huge(prompt: str) -> str:
        return prompt

    with pytest.raises(ConfigError, match="cost") as caught:
        check_tasks(app)
    assert "huge" in str(caught.value)
    app.tasks.pop(huge.name)

    @app.task(base=RateLimitedTask, integration="notoin", shared=False)
    def lost() -> None: ...

    with pytest.raises(ConfigError) as caught:  # it would sit in a queue nobody consumes
        check_tasks(app)
    assert "lost" in str(caught.value) and "did you mean 'notion'?" in str(caught.value)


def test_a_worker_whose_task_names_an_unknown_integration_stops_at_start_with_one_line(
    tmp_path: Path, redis_url: str
) -> None:
    (tmp_path / "typo_app.py").write_text(
        "from celery import Celery\n"
        "from queue_ratelimit.integrations.celery import RateLimitedTask, install\n"
        f"app = Celery('typo_app', broker={redis_url!r})\n"
        f"app.conf.queue_ratelimit_redis_url = {redis_url!r}\n"
        "install(app)\n"
        "@app.task(base=RateLimitedTask, integration='notoin', shared=False)\n"
        "def sync_page():\n"
        "    pass\n",
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "celery", "-A", "typo_app", "worker", "--pool=solo"]
    command += ["-Q", "qrl-typo", "--without-mingle", "--without-gossip"]
    refused_at_start(command, tmp_path, "typo_app.sync_page")


def test_a_requeue_fires_task_retry_with_a_reason_that_says_it_is_a_requeue(
    redis_url: str,
) -> None:
    with celery_rig("redis", redis_url, limit=5, window=1.0, headers="retry-after") as rig:
        rig.start_worker("w1", [capp.NOTION], concurrency=4)
        ids = [rig.send("tests.sync_notion", [i], capp.NOTION) for i in range(30)]
        assert all(isinstance(v, dict) for v in wait_all(rig.results(ids), timeout=100))
        records = redis.Redis.from_url(redis_url)
        requeued = [r.decode().split()[0] for r in records.lrange(f"{capp.PREFIX}:requeues", 0, -1)]
        retries = [r.decode().split() for r in records.lrange(f"{capp.PREFIX}:retries", 0, -1)]
        assert requeued  # the upstream's 429s requeued some: else this checks nothing
        assert sorted(task_id for task_id, _ in retries) == sorted(requeued)
        assert {flag for _, flag in retries} == {"1"}  # each one tells itself a requeue

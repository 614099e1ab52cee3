"""The scenarios every integration must pass, written once and run on each rig: Celery on
Redis and RabbitMQ, Dramatiq on Redis and RabbitMQ, RQ's forking and simple workers (rigs.py),
with real workers and brokers against a hidden-limit upstream."""

from __future__ import annotations

import time

from queue_ratelimit.errors import RequeueBudgetExhausted
from tests.integration.rigs import Failure, OpenRig, completed
from tests.support import wait_until


def test_200_tasks_on_two_workers_each_run_once_without_long_sleeps_or_retries(
    rig_of: OpenRig,
) -> None:
    with rig_of(limit=10, window=1.0, headers="retry-after") as rig:
        rig.start_worker([rig.notion, rig.github], concurrency=4)
        rig.start_worker([rig.notion, rig.github], concurrency=4)
        ids = [rig.send("notion", rig.notion, i) for i in range(100)]
        ids += [rig.send("github", rig.github, i) for i in range(100)]
        values = rig.wait_all(ids, timeout=100)
        assert completed(values), [v for v in values if not isinstance(v, dict)][:3]
        assert rig.upstream.served_once(set(ids))  # counted by the upstream, by task id
        assert set(rig.retries(ids)) == {0}  # rate limits never spent a framework retry
        if rig.limiter.configs[rig.notion].rate_limit_per_sec > 10:  # starts above the limit
            assert rig.upstream.count(429) > 0  # the hidden limit was met, and absorbed
        requeued = set(rig.requeued())
        assert requeued  # the limit was met: tasks went back, to run later
        assert requeued <= set(ids)  # each requeue named its task
        waits = rig.waits()
        assert len(waits) >= 200
        names = {rig.task_name(task): task for task in ("notion", "github")}
        assert {w.task for w in waits} == set(names)
        assert {w.task_id for w in waits} == set(ids)
        # max_wait in line, plus up to cooldown_wait (unset: max_wait) of a cooldown
        assert all(w.seconds <= 2 * rig.max_wait(names[w.task]) + 1e-6 for w in waits)


def test_a_cooling_integration_does_not_block_another_on_the_same_worker(
    rig_of: OpenRig,
) -> None:
    with rig_of(limit=100) as rig:
        rig.limiter.on_backoff(rig.notion, retry_after=60.0)  # notion: a 60 s cooldown
        rig.start_worker([rig.notion, rig.github], concurrency=1)
        notion = [rig.send("notion", rig.notion, i) for i in range(20)]
        github = [rig.send("github", rig.github, i) for i in range(20)]
        assert completed(rig.wait_all(github, timeout=45))
        assert rig.upstream.count(200) == 20  # only github reached the upstream
        later = rig.later(notion)  # the same tasks, requeued for later, no premature result
        assert set(later) == set(notion)
        soon = time.time() + 45  # ... due when the cooldown ends, where the framework says
        assert all(due is None or due > soon for due in later.values())


def test_an_exhausted_requeue_budget_fails_visibly_with_the_typed_error(rig_of: OpenRig) -> None:
    with rig_of(limit=100) as rig:
        rig.start_worker([rig.notion], concurrency=2)
        task_id = rig.send("throttled", rig.notion)
        (value,) = rig.wait_all([task_id], timeout=60)
        assert isinstance(value, Failure) and value.is_a(RequeueBudgetExhausted), value
        assert "requeued 3 times" in value.message
        # where the framework shows failures (Celery: the FAILURE state and task_failure;
        # Dramatiq: the dead-letter queue; RQ: the FailedJobRegistry), and only there
        failed = wait_until(rig.failed, timeout=10)
        assert failed == {task_id: "RequeueBudgetExhausted"}
        assert rig.retries([task_id]) == [0]  # retries neither spent nor applied
        assert rig.requeued() == [task_id] * 3
        assert rig.runs(task_id) == 4  # the first run and three requeues, then failed
        assert rig.ticket_kept(task_id) in (False, None)  # requeued by hand, it starts afresh


def test_a_worker_says_once_what_it_uses_and_each_requeue_is_one_info_line(rig_of: OpenRig) -> None:
    with rig_of(limit=5, window=1.0, headers="retry-after") as rig:  # 429s: requeued
        worker = rig.start_worker([rig.notion], concurrency=4)
        ids = [rig.send("notion", rig.notion, i) for i in range(50)]
        assert completed(rig.wait_all(ids, timeout=100))
        requeued = rig.requeued()
        assert requeued  # the upstream's limit requeued some: else this checks nothing
        lines = rig.log(worker).splitlines()
        said = [line for line in lines if "requeued for" in line]
        assert sorted(next(i for i in ids if f"[{i}]" in line) for line in said) == sorted(
            requeued
        )  # one line per requeue, naming its task
        assert not [line for line in said if "WARNING" in line or "ERROR" in line]  # INFO
        # (RQ's log format shows no level; the line is written with logger.info)
        warned = [line for line in lines if "WARNING" in line and "skipped" in line]
        assert not warned, warned  # Dramatiq's "Message ... was skipped." is not repeated
        assert not [line for line in lines if "retry: requeued" in line]  # nor Celery's retry
        started = [line for line in lines if "queue_ratelimit: limiter on redis://" in line]
        assert len(started) == 1, started  # one line at start: which Redis, config, names
        assert rig.notion in started[0] and "(prefix " in started[0], started
        warnings = [line for line in lines if "WARNING" in line]
        print(  # the figures, with pytest -s (issue 17's worker log counts)
            f"\n{rig.name}: 50 tasks, {len(requeued)} requeues, {len(said)} requeue lines, "
            f"{len(warnings)} WARNING lines, {len(lines)} lines in all"
        )

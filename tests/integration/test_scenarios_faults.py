"""The fault scenarios every integration must pass, written once and run on each rig (see
test_scenarios.py): a breaker that pauses a queue, a worker killed mid-task, objects
another request holds."""

from __future__ import annotations

import pytest

from queue_ratelimit.errors import CONTENTION
from tests.integration.rigs import Failure, OpenRig, completed
from tests.support import wait_until


def test_consecutive_5xx_pause_the_queue_until_a_probe_succeeds(rig_of: OpenRig) -> None:
    with rig_of(limit=100) as rig:
        worker = rig.start_worker([rig.notion, rig.github], concurrency=2)
        rig.upstream.fail_with(500)
        failing = [rig.send("notion_no_retry", rig.notion, i) for i in range(5)]
        values = rig.wait_all(failing, timeout=60)
        assert all(isinstance(v, Failure) for v in values)  # real errors fail as usual
        assert rig.limiter.snapshot(rig.notion).breaker == "open"
        wait_until(lambda: rig.paused(worker) == {rig.notion}, timeout=10)  # github flows
        rig.upstream.fail_with(None)
        held = [rig.send("notion_no_retry", rig.notion, i) for i in range(5)]
        other = rig.send("github", rig.github, 1)
        assert completed(rig.wait_all([other], timeout=10))  # github flows
        assert rig.waiting(rig.notion) == 5  # safe in the broker while the breaker is open
        assert rig.upstream.count(200) == 1
        assert rig.limiter.snapshot(rig.notion).breaker_wait > 0  # (it still was)
        wait_until(lambda: not rig.paused(worker), timeout=30, every=0.1)
        assert completed(rig.wait_all(held, timeout=60))
        assert rig.limiter.snapshot(rig.notion).breaker == "closed"  # the probe closed it
        assert rig.upstream.served_once({*held, other})


def test_a_busy_object_requeues_its_task_without_cutting_the_rate(rig_of: OpenRig) -> None:
    with rig_of(limit=100) as rig:  # (above the limiter's max_rate: no 429 of the limit)
        rig.upstream.busy(0.3)  # Stripe's 429 lock_timeout, for 30% of the calls
        rig.start_worker([rig.notion], concurrency=4)
        ids = [rig.send("notion", rig.notion, i) for i in range(40)]
        assert completed(rig.wait_all(ids, timeout=90))
        assert rig.upstream.served_once(set(ids))  # each ran once to its 200, none lost
        assert rig.upstream.count(429) > 0  # objects were busy ...
        busy = set(rig.requeued(CONTENTION))
        assert busy and busy <= set(ids)  # ... and their tasks went back to try again
        assert set(rig.retries(ids)) == {0}  # spending no framework retry
        seen = rig.limiter.snapshot(rig.notion)
        assert seen.counts.get("backoffs", 0) == 0  # no backoff: the rate was never cut
        assert seen.cooldown_left == 0.0
        assert (seen.breaker, seen.breaker_failures) == ("closed", 0)


@pytest.mark.timeout(240)  # RQ's simple worker: its job is abandoned only 70 s after it began
def test_a_worker_killed_mid_task_loses_nothing(rig_of: OpenRig) -> None:
    with rig_of(limit=100, kills=True) as rig:
        doomed = rig.start_worker([rig.notion], concurrency=4)
        ids = [rig.send("held", rig.notion) for _ in range(30)]
        caught = wait_until(rig.holding, timeout=30)  # they called the upstream, and hold
        rig.kill_worker(doomed)
        rig.release()
        rig.start_worker([rig.notion], concurrency=4)
        values = rig.wait_all(ids, timeout=180)
        assert values == ids  # every task completed
        assert set(rig.upstream.served) == set(ids)
        assert all(rig.upstream.served[i] >= 2 for i in caught)  # the ones killed ran again

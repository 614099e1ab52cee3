"""Fair share on a real fleet: eight RQ workers, an integration-wide limit of 20/s over
per-tenant limits of 5/s (``rq_jobs.FAIR``), and one tenant with a backlog of 1,000 that the
workers are going through when 19 quiet tenants with 20 tasks each arrive. Each quiet tenant
must finish within 1.5x its time alone (the 19 run without the backlog first), the slots the
integration-wide level grants must never pass 20/s (plus its burst of 1) in any second, and
no task may be lost or run twice."""

from __future__ import annotations

import time

import pytest

from tests.integration.rq_harness import RQRig, jobs, rq_rig
from tests.support import most_in_one_second, wait_until

pytestmark = pytest.mark.redis

QUIET, EACH, BACKLOG = 19, 20, 1000
WORKERS = 8


def _finish_times(rig: RQRig, ids: dict[str, list[str]], start: float) -> dict[str, float]:
    """Seconds from ``start`` to each tenant's last call served (its tasks' ids by tenant)."""
    when = rig.upstream.served_when
    return {tenant: max(when[i] for i in job_ids) - start for tenant, job_ids in ids.items()}


def _enqueue(rig: RQRig, tenants: list[str], count: int) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for tenant in tenants:
        ids[tenant] = [
            rig.enqueue(jobs.SHARED, jobs.sync_tenant, tenant, n).id for n in range(count)
        ]
    return ids


def test_quiet_tenants_keep_their_pace_beside_a_backlog(redis_url: str) -> None:
    with rq_rig("simple", redis_url, limit=1000) as rig:
        for _ in range(WORKERS):
            rig.start_worker([jobs.SHARED])
        # alone: the 19 quiet tenants' tasks, each tenant's 20 in a row
        start = time.time()
        alone_ids = _enqueue(rig, [f"alone{i}" for i in range(QUIET)], EACH)
        every = [i for ids in alone_ids.values() for i in ids]
        served = rig.upstream.served_when
        wait_until(lambda: all(i in served for i in every), timeout=180, every=0.5)
        alone = _finish_times(rig, alone_ids, start)
        # then the backlog, being worked through (every task taken once: run, or requeued
        # with its reservation), and the same 19 arriving (named anew). (A backlog still at
        # the head of one FIFO queue delays whatever is behind it by the time the workers
        # take to requeue it: docs/limits.md, per-tenant queues.)
        noisy = _enqueue(rig, ["noisy"], BACKLOG)["noisy"]
        queue = rig.queue(jobs.SHARED)
        wait_until(lambda: queue.count < 10, timeout=120, every=0.2)
        start = time.time()
        quiet_ids = _enqueue(rig, [f"quiet{i}" for i in range(QUIET)], EACH)
        quiet_every = [i for ids in quiet_ids.values() for i in ids]
        wait_until(lambda: all(i in served for i in quiet_every), timeout=240, every=0.5)
        beside = _finish_times(rig, quiet_ids, start)
        calls = list(rig.upstream.served_at[jobs.SHARED])
        for _, proc, _ in rig.workers:  # stop, then count every task where it is
            proc.terminate()
        for _, proc, _ in rig.workers:
            proc.wait(timeout=30)
        statuses = rig.statuses(noisy + quiet_every + every)
        slots = [float(at) for at in rig.records(f"slots:{jobs.SHARED}")]
    for i in range(QUIET):
        assert beside[f"quiet{i}"] <= 1.5 * alone[f"alone{i}"], str(
            (
                i,
                [round(beside[f"quiet{j}"], 1) for j in range(QUIET)],
                [round(alone[f"alone{j}"], 1) for j in range(QUIET)],
            )
        )
    assert len(slots) >= len(calls)  # every call went at a slot granted (some slots unused)
    assert most_in_one_second(slots) <= jobs.APP_RATE + 1  # the app's rate and burst
    done = statuses.count("finished")
    assert statuses.count("failed") == 0
    assert set(statuses) <= {"finished", "queued", "scheduled", "deferred"}  # none lost
    assert done >= len(every) + len(quiet_every)
    assert all(count == 1 for count in rig.upstream.served.values())  # none run twice

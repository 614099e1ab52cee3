"""The due set of requeued tasks and their latest copies (integrations/due.lua), on a real
Redis: parking, promotion by concurrent promoters, lapsed claims, stale copies."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis

from queue_ratelimit.errors import BackendError
from queue_ratelimit.integrations.due import Claimed, DueTasks
from tests.support import RedisProcess

pytestmark = pytest.mark.redis


@pytest.fixture
def due(redis_client: redis.Redis, key_prefix: str) -> DueTasks:
    return DueTasks(redis_client, key_prefix, "test", claim=30.0, most=7)


def _claim_all(due: DueTasks) -> list[Claimed]:
    claimed, _ = due.claim()
    return claimed


def test_a_parked_task_is_due_after_its_countdown_and_its_original_is_stale(
    due: DueTasks,
) -> None:
    assert due.check("t1", None)  # an original nobody requeued is the latest
    assert due.park("t1", None, "p1", 0.0, "message-1")
    assert not due.check("t1", None)  # the delivery that parked it, delivered again
    assert not due.park("t1", None, "p2", 0.0, "again")  # nor can it park a second copy
    [item] = _claim_all(due)
    assert (item.task_id, item.message) == ("t1", "message-1")
    claimed, soonest = due.claim()
    assert claimed == [] and soonest is not None and soonest > 25  # claimed: 30 s to arrive
    assert due.check("t1", item.token)
    assert not due.check("t1", "p1") and not due.check("t1", None)
    assert due.claim() == ([], None)  # its copy arrived: settled, nothing left


def test_a_task_not_yet_due_stays_and_says_when(due: DueTasks) -> None:
    due.park("later", None, "p1", 60.0, "m")
    claimed, soonest = due.claim()
    assert claimed == []
    assert soonest is not None and 55.0 < soonest <= 60.0


def test_two_concurrent_promoters_promote_every_task_exactly_once(
    redis_url: str, key_prefix: str, due: DueTasks
) -> None:
    ids = [f"task-{i}" for i in range(300)]
    for task_id in ids:
        due.park(task_id, None, "p", 0.0, f"body {task_id}")
    promoted: list[list[Claimed]] = [[], []]
    start = threading.Barrier(2)

    def promoter(mine: list[Claimed]) -> None:
        client = redis.Redis.from_url(redis_url)
        own = DueTasks(client, key_prefix, "test", most=3)
        client.ping()  # connected before the start: under load, a slow first connection
        start.wait()  # let the other promoter claim everything (seen in a loaded run)
        while True:
            claimed, soonest = own.claim()
            mine.extend(claimed)
            if not claimed and (soonest is None or soonest > 1.0):
                return  # what is left is claimed (30 s to arrive)

    threads = [threading.Thread(target=promoter, args=(mine,)) for mine in promoted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = promoted[0] + promoted[1]
    assert Counter(item.task_id for item in every) == Counter(ids)  # each once, none left
    assert all(item.message == f"body {item.task_id}" for item in every)
    assert promoted[0] and promoted[1]  # both took part (batches of 3 interleave)
    assert all(due.check(item.task_id, item.token) for item in every)
    assert due.claim() == ([], None)  # every copy arrived


def test_a_lapsed_claim_is_claimed_again_later_each_time_and_its_first_copy_goes_stale(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    due = DueTasks(redis_client, key_prefix, "test", claim=0.001)
    due.park("t", None, "p", 0.0, "m")
    tokens, lapses = [], []
    for _ in range(4):  # its copies never arrive (lost, or stuck behind a long queue)
        claimed: list[Claimed] = []
        while not claimed:
            claimed, _ = due.claim()
        tokens.append(claimed[0].token)
        lapses.append(due.claim()[1])
    assert len(set(tokens)) == 4
    assert all(lapse is not None for lapse in lapses)
    assert lapses[3] > 4 * lapses[0]  # doubled each time: 1, 2, 4, 8 ms
    assert not any(due.check("t", token) for token in tokens[:3])
    assert due.check("t", tokens[3])
    assert due.claim() == ([], None)  # the arrival of the latest copy settled it


def test_a_copy_parked_again_replaces_its_message_and_is_due_later(due: DueTasks) -> None:
    due.park("t", None, "p", 0.0, "first")
    [item], _ = due.claim()
    assert due.check("t", item.token)
    assert due.park("t", item.token, "p2", 60.0, "second")  # requeued again at once
    assert not due.check("t", item.token)  # that delivery, delivered again, is stale
    claimed, soonest = due.claim()
    assert claimed == [] and soonest is not None and soonest > 50


def test_a_copy_its_framework_publishes_is_pending_and_the_first_to_arrive_runs(
    due: DueTasks,
) -> None:
    # the Dramatiq form: the framework publishes the copy, then acknowledges the delivery
    assert due.park("t", None, "d1", 5.0, None)
    assert due.claim() == ([], None)  # nothing parked to promote
    assert due.check("t", "d1")  # the copy arrives
    assert not due.check("t", None)  # the delivery, delivered again (killed before its ack)
    assert not due.park("t", None, "d2", 0.0, None)
    # killed after publishing and before the ack, the delivery arrives again first
    assert due.park("u", None, "e1", 0.0, None)
    assert due.check("u", None) and not due.check("u", "e1")
    assert not due.check("u", "other")


def test_forgotten_tokens_are_swept_but_a_parked_task_is_kept(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    due = DueTasks(redis_client, key_prefix, "test", keep=0.001)
    due.park("gone", None, "d1", 0.0, None)
    due.park("parked", None, "p1", 3600.0, "m")
    copies = due.keys[2]
    while redis_client.hexists(copies, "gone"):
        due.claim()  # each claim sweeps what may be forgotten
    assert redis_client.hget(copies, "parked") == b"p1"
    assert due.check("gone", None)  # forgotten: as if never requeued


def test_redis_errors_are_backend_errors(key_prefix: str) -> None:
    client = redis.Redis(port=1, socket_connect_timeout=0.2)
    due = DueTasks(client, key_prefix, "test")
    with pytest.raises(BackendError, match="due-set check"):
        due.check("t", None)


def test_a_redis_that_could_lose_parked_tasks_is_named(private_redis: RedisProcess) -> None:
    private_redis.durable = True
    client = redis.Redis.from_url(private_redis.start().url)
    due = DueTasks(client, "qrl", "test")
    assert due.durability() == []  # an append-only file, and no eviction
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.config_set("appendonly", "no")
    problems = due.durability()
    assert len(problems) == 2
    assert "allkeys-lru may evict" in problems[0] and "a restart loses" in problems[1]


def test_the_tokens_expire_with_their_last_need_and_parked_tasks_never(
    due: DueTasks, redis_client: redis.Redis
) -> None:
    due.park("t", None, "p", 600.0, "m")  # due in 10 min, its token kept 2 h after that
    parked, messages, copies, forget = due.keys
    assert redis_client.pttl(parked) == redis_client.pttl(messages) == -1  # tasks: no expiry
    for key in (copies, forget):
        assert (600 + 7200 - 5) * 1000 < redis_client.pttl(key) <= (600 + 7200) * 1000
    due.park("u", None, "p", 0.0, "m")  # a shorter need never shortens a key's life
    assert min(redis_client.pttl(key) for key in (copies, forget)) > (600 + 7200 - 5) * 1000
    due.purge()
    assert redis_client.exists(*due.keys) == 0


def test_a_task_whose_token_is_forgotten_runs_and_parks_again(due: DueTasks) -> None:
    # a copy that outlived its token (a body longer than keep, a long retry countdown)
    assert due.check("t", "c12.0")
    assert due.park("t", "c12.0", "p", 0.0, "m")
    [item], _ = due.claim()
    assert due.check("t", item.token)


def test_a_task_id_used_again_parks_from_its_first_delivery(due: DueTasks) -> None:
    due.park("same-id", None, "p1", 0.0, "first task")
    [item], _ = due.claim()
    assert due.check("same-id", item.token)  # the first task ran
    assert not due.park("same-id", None, "p2", 0.0, "second task")  # as a redelivery: stale
    assert due.park("same-id", None, "p2", 0.0, "second task", fresh=True)
    [again], _ = due.claim()
    assert again.message == "second task"


def test_a_dropped_task_is_never_promoted(due: DueTasks) -> None:
    due.park("revoked", None, "p", 0.0, "m")
    due.park("kept", None, "p", 0.0, "m")
    assert due.drop("revoked") and not due.drop("revoked")
    claimed, _ = due.claim()
    assert [item.task_id for item in claimed] == ["kept"]


def test_an_expired_celery_task_is_dropped_not_published(
    redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    from datetime import datetime, timedelta, timezone

    from celery import Celery

    from queue_ratelimit.integrations.celery import install
    from queue_ratelimit.integrations.celery_due import due_for, encode, promote

    app = Celery("expiry", broker=redis_url)
    app.conf.update(
        queue_ratelimit_redis_url=redis_url,
        queue_ratelimit_prefix=key_prefix,
        broker_transport_options={"global_keyprefix": f"{key_prefix}-broker:"},
    )
    install(app)
    due = due_for(app)
    assert due is not None
    past = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    for task_id, expires in (("expired", past), ("alive", None)):
        options = {"task_id": task_id, "queue": "q", "expires": expires}
        signature = {"task": "t", "args": [], "kwargs": {}, "options": options}
        due.park(task_id, None, "p", 0.0, encode(app, signature), fresh=True)
    promote(app)
    queued = redis_client.lrange(f"{key_prefix}-broker:q", 0, -1)
    assert len(queued) == 1 and b"alive" in queued[0]  # the expired one was not published
    assert due.claim()[0] == []  # "alive" waits for its copy to arrive; "expired" is gone
    assert redis_client.zscore(due.keys[0], "expired") is None
    assert redis_client.zscore(due.keys[0], "alive") is not None
    for key in redis_client.scan_iter(match=f"{key_prefix}-broker:*"):
        redis_client.delete(key)


# originals tracked from publish to receipt (a Redis broker's window, celery_published)


def test_a_received_original_is_no_longer_tracked_and_runs(due: DueTasks) -> None:
    assert due.sent("q", "t1", "message", 100.0)
    assert due.received("q", "t1")  # run it
    assert due.beat("w1", 200.0, 10.0) == 0.0
    assert due.beat("w2", 220.0, 10.0) == 220.0  # w1 silent for 20 s: found dead
    assert due.lost("q", 1e12) == ([], 0)  # received: nothing to publish again, none left
    assert due.received("q", "t1")  # delivered again by its broker: still the latest


def test_an_original_received_before_its_sent_is_not_tracked_afterwards(due: DueTasks) -> None:
    assert due.received("q", "early")  # the worker was faster than the publisher's call
    assert not due.sent("q", "early", "message", 100.0)
    assert due.lost("q", 1e12) == ([], 0)


def test_a_lost_original_is_claimed_once_as_a_copy_and_the_original_goes_stale(
    due: DueTasks,
) -> None:
    for i, at in enumerate((100.0, 101.0, 102.0)):
        due.sent("q", f"t{i}", f"message {i}", at)
    assert due.lost("other", 1e12) == ([], 0)  # another queue's
    [item], left = due.lost("q", 101.0, horizon=150.0)  # before the oldest still queued (t1)
    assert (item.task_id, item.message) == ("t0", "message 0")
    assert item.token.startswith("o")
    assert left == 2  # t1 and t2, published before the horizon, still tracked (queued)
    assert due.lost("q", 101.0) == ([], 0)  # claimed once
    assert not due.received("q", "t0")  # the original after all: stale, dropped
    assert due.received("q", "t1") and due.received("q", "t2")
    claimed, soonest = due.claim()  # the copy's claim lapses in 30 s unless it arrives
    assert claimed == [] and soonest is not None and soonest > 25
    assert due.check("t0", item.token)  # the copy arrives: it runs, the task is settled
    assert not due.check("t0", None)
    assert due.claim() == ([], None)


def test_a_lost_originals_copy_that_is_lost_too_is_claimed_again_and_stays_a_copy(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    due = DueTasks(redis_client, key_prefix, "test", claim=0.05)
    due.sent("q", "t", "message", 100.0)
    [first], _ = due.lost("q", 1e12)
    deadline = time.monotonic() + 10
    while not (claimed := due.claim()[0]):  # its claim lapses after 0.05 s
        assert time.monotonic() < deadline
    [again] = claimed
    assert again.token.startswith("o") and again.token != first.token
    assert not due.received("q", "t")  # the original is still stale
    assert not due.check("t", first.token) and due.check("t", again.token)


def test_a_broken_broker_connection_counts_as_a_death(due: DueTasks) -> None:
    assert due.beat("w1", 100.0, 10.0) == 0.0
    due.loss(150.0)  # w1's consumer started again: what it was taking may be lost
    assert due.beat("w1", 151.0, 10.0) == 150.0
    due.loss(120.0)  # an older one changes nothing
    assert due.beat("w1", 152.0, 10.0) == 150.0


def test_a_beating_worker_is_alive_and_one_that_left_is_not_dead(due: DueTasks) -> None:
    assert due.beat("w1", 100.0, 10.0) == 0.0
    assert due.beat("w2", 105.0, 10.0) == 0.0
    due.leave("w1")  # stopped cleanly
    assert due.beat("w2", 200.0, 10.0) == 0.0
    assert due.beat("w3", 300.0, 10.0) == 300.0  # w2 went silent
    assert due.beat("w3", 301.0, 10.0) == 300.0  # remembered

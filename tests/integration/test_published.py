"""Celery on a Redis broker: an original lost between the broker's pop and its unacked
record (a worker killed in between; celery_published) is published again, once, and runs
once; the originals still queued are left alone.

The loss is made as the window leaves it: the message is taken off its list (``RPOP``, as
the killed worker's ``BRPOP`` did) and the worker that took it is killed.
"""

from __future__ import annotations

import pytest
import redis

from queue_ratelimit.integrations.celery_due import due_for
from queue_ratelimit.integrations.celery_published import SENT_HEADER
from tests.integration.celery_harness import capp, celery_rig, wait_all
from tests.support import RedisProcess, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


def test_an_original_lost_in_the_brokers_window_is_published_again_and_runs_once(
    redis_url: str,
) -> None:
    with celery_rig("redis", redis_url, limit=100) as rig:
        rig.settings["queue_ratelimit_lost_after"] = 1.0
        broker = redis.Redis.from_url(redis_url)
        queue = rig.settings["broker_transport_options"]["global_keyprefix"] + capp.NOTION
        doomed = rig.start_worker("doomed", [capp.GITHUB], concurrency=1)  # it beats
        broker.delete(f"{capp.PREFIX}:bodies")
        lost = rig.send("tests.counted", [0], capp.NOTION)
        slow = [rig.send("tests.slow", [2.0], capp.NOTION) for _ in range(3)]
        due = due_for(rig.client)
        assert due is not None
        sent = redis.Redis.from_url(rig.limiter_url).zrange(due.sent_key(capp.NOTION), 0, -1)
        assert {s.decode() for s in sent} == {lost, *slow}  # tracked by the publisher
        taken = broker.rpop(queue)  # the oldest, as the killed worker's BRPOP took it
        assert taken is not None and lost.encode() in taken and SENT_HEADER.encode() in taken
        rig.kill(doomed)
        worker = rig.start_worker("w", [capp.NOTION], concurrency=1)
        values = wait_all(rig.results([lost, *slow]), timeout=120)
        assert [type(v) for v in values] == [dict, str, str, str], values
        wait_until(lambda: rig.upstream.served_once({lost, *slow}), timeout=10)
        log = rig.log_of(worker, whole=True)
        # found lost once; the slow ones waited in the queue past lost_after, untouched
        assert log.count("was lost on its way to a worker") == 1, log
        assert f"task {lost} was lost" in log
        bodies = broker.lrange(f"{capp.PREFIX}:bodies", 0, -1)
        assert len(bodies) == 1 and b'"o' in bodies[0]  # it ran as the copy
        # the original was not lost after all (held by a worker that only looked dead):
        # when it arrives, it is stale and dropped
        broker.rpush(queue, taken)
        wait_until(lambda: "dropped, its copy runs instead" in rig.log_of(worker), timeout=30)
        wait_until(lambda: rig.idle([worker], [capp.NOTION]), timeout=30)
        assert rig.upstream.served_once({lost, *slow})
        assert broker.llen(f"{capp.PREFIX}:bodies") == 1


def test_originals_are_tracked_on_a_redis_broker_only_and_the_settings_are_checked(
    redis_url: str, key_prefix: str
) -> None:
    from celery import Celery

    from queue_ratelimit.errors import ConfigError
    from queue_ratelimit.integrations.celery import install
    from queue_ratelimit.integrations.celery_published import lost_after, tracked

    def app(broker: str, **conf: object) -> Celery:
        made = Celery("tracking", broker=broker)
        made.conf.update(queue_ratelimit_redis_url=redis_url, queue_ratelimit_prefix=key_prefix)
        made.conf.update(conf)
        install(made)
        return made

    assert tracked(app(redis_url)) is not None
    assert tracked(app("amqp://guest:guest@127.0.0.1:5672//")) is None  # acked by RabbitMQ
    assert tracked(app(redis_url, queue_ratelimit_track_published=False)) is None
    with pytest.raises(ConfigError, match="queue_ratelimit_track_published"):
        tracked(app(redis_url, queue_ratelimit_track_published="yes"))
    with pytest.raises(ConfigError, match="queue_ratelimit_lost_after"):
        lost_after(app(redis_url, queue_ratelimit_lost_after=0))


def test_a_broken_broker_connection_is_recorded_as_a_possible_loss(
    redis_url: str, private_redis: RedisProcess
) -> None:
    broker = private_redis.start()  # kombu's BRPOP reply in flight is lost with it
    with celery_rig("redis", redis_url, broker_url=broker.url, limit=100) as rig:
        rig.start_worker("w", [capp.NOTION], concurrency=1)
        due = due_for(rig.client)
        assert due is not None
        state = redis.Redis.from_url(rig.limiter_url)
        wait_until(lambda: state.hlen(due.consumers_key) >= 1, timeout=30)  # it beats
        assert state.hget(due.consumers_key, ":died") is None  # no loss yet
        redis.Redis.from_url(broker.url).execute_command("CLIENT", "KILL", "TYPE", "normal")
        wait_until(lambda: state.hget(due.consumers_key, ":died") is not None, timeout=60)
        assert float(state.hget(due.consumers_key, ":died") or 0) > 0

"""Keep the stack busy: ``python -m deploy.app.producer`` enqueues a steady load.

Round robin over every (framework, integration) pair, at ``--rate`` tasks per second in all
(``PRODUCER_RATE``, default 24: 12 calls/s to each integration, 60% of the upstream's hidden
20/s, 4/s through each framework and integration; one forking RQ worker runs about 13 jobs/s
at best, so more than ~36 in all leaves RQ behind). ``--frameworks``
(``PRODUCER_FRAMEWORKS``, default ``celery,dramatiq,rq``) picks the frameworks; only those
are imported, so a producer for RQ alone needs no RabbitMQ. ``--count N`` stops after N
tasks (0, the default: never). It prints a line every ``--report`` seconds; a broker error
ends it (the stack restarts it).

A producer that falls behind (a slow broker) does not burst to catch up: it keeps the rate
from where it is.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deploy.app.settings import INTEGRATIONS, Settings

__all__ = ["FRAMEWORKS", "enqueuers", "main", "produce"]

Enqueue = Callable[[str, int], object]
"""Enqueue task number ``n`` of ``integration`` in one framework."""

FRAMEWORKS = ("celery", "dramatiq", "rq")


def _celery(settings: Settings) -> Enqueue:
    from deploy.app import celery_app

    tasks = {"crm": celery_app.sync_contact, "helpdesk": celery_app.sync_ticket}
    return lambda integration, n: tasks[integration].delay(n)


def _dramatiq(settings: Settings) -> Enqueue:
    from deploy.app import dramatiq_actors

    actors: dict[str, Any] = {
        "crm": dramatiq_actors.sync_contact,
        "helpdesk": dramatiq_actors.sync_ticket,
    }
    return lambda integration, n: actors[integration].send(n)


def _rq(settings: Settings) -> Enqueue:
    import redis

    from deploy.app import rq_jobs

    connection = redis.Redis.from_url(settings.rq_redis_url)
    jobs = {"crm": rq_jobs.sync_contact, "helpdesk": rq_jobs.sync_ticket}
    return lambda integration, n: rq_jobs.enqueue(connection, jobs[integration], integration, n)


_BUILDERS: Mapping[str, Callable[[Settings], Enqueue]] = {
    "celery": _celery,
    "dramatiq": _dramatiq,
    "rq": _rq,
}


def _echo(line: str) -> None:
    print(line, flush=True)


def enqueuers(frameworks: Sequence[str], settings: Settings) -> dict[str, Enqueue]:
    """One enqueue function per framework (importing only those frameworks' apps)."""
    return {name: _BUILDERS[name](settings) for name in frameworks}


def produce(
    enqueue: Mapping[str, Enqueue],
    rate: float,
    count: int = 0,
    *,
    report_every: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    echo: Callable[[str], None] = _echo,
) -> int:
    """Enqueue ``count`` tasks (0: forever) at ``rate`` per second; return how many."""
    pairs = itertools.cycle([(f, i) for i in INTEGRATIONS for f in enqueue])
    interval = 1.0 / rate
    started = next_at = last_report = clock()
    sent = 0
    while count == 0 or sent < count:
        delay = next_at - clock()
        if delay > 0:
            sleep(delay)
        framework, integration = next(pairs)
        enqueue[framework](integration, sent)
        sent += 1
        now = clock()
        next_at = max(next_at + interval, now - interval)  # behind: no burst to catch up
        if now - last_report >= report_every:
            echo(f"enqueued {sent} tasks ({sent / (now - started):.1f}/s)")
            last_report = now
    return sent


def _positive(raw: str) -> float:
    value = float(raw)  # argparse reports a ValueError as an invalid value
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0: {raw!r}")
    return value


def _count(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {raw!r}")
    return value


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.app.producer",
        description="Enqueue a steady load of rate-limited tasks across Celery, Dramatiq, RQ.",
    )
    parser.add_argument(  # a string default goes through type= too: a bad env is reported
        "--rate",
        type=_positive,
        default=env.get("PRODUCER_RATE", "24"),
        help="tasks per second, in all (env PRODUCER_RATE; default: %(default)s)",
    )
    parser.add_argument(
        "--frameworks",
        default=env.get("PRODUCER_FRAMEWORKS", ",".join(FRAMEWORKS)),
        help="comma-separated, among celery, dramatiq, rq (env PRODUCER_FRAMEWORKS; "
        "default: %(default)s)",
    )
    parser.add_argument("--count", type=_count, default=0, help="stop after N tasks (0: never)")
    parser.add_argument(
        "--report", type=_positive, default=10.0, help="seconds between progress lines"
    )
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Parse the arguments, then produce until ``--count`` or Ctrl-C; return the count.

    Raises:
        SystemExit: 2 for an invalid argument or environment variable.
    """
    env = os.environ if environ is None else environ
    parser = _parser(env)
    args = parser.parse_args(argv)
    frameworks = list(dict.fromkeys(n.strip() for n in args.frameworks.split(",") if n.strip()))
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown or not frameworks:
        parser.error(f"--frameworks: choose among {', '.join(FRAMEWORKS)}, not {unknown}")
    enqueue = enqueuers(frameworks, Settings.from_env(env))
    print(f"producing {args.rate:g} tasks/s through {', '.join(enqueue)}", flush=True)
    try:
        return produce(enqueue, args.rate, args.count, report_every=args.report)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    main()

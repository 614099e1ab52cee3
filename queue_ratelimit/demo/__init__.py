"""The demo behind ``queue-ratelimit demo``: a hidden-limit API, real workers, the limit found.

``run`` drives a run; ``with_celery`` and ``with_dramatiq`` run the tasks on each framework
(embedded, or as a fleet of worker processes on Redis); ``report`` records the rates and
prints the summary and the chart. Only ``run_demo`` and ``DemoSummary`` are for users::

    from queue_ratelimit.demo import run_demo

    summary = run_demo(plot="rate.png")
    assert summary.lost == summary.duplicates == 0
"""

from queue_ratelimit.demo.report import DemoSummary
from queue_ratelimit.demo.run import run_demo

__all__ = ["DemoSummary", "run_demo"]

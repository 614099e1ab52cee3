"""``python -m queue_ratelimit.testing``: see :func:`queue_ratelimit.testing.cli.main`."""

from queue_ratelimit.testing.cli import main

main()

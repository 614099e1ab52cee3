"""RQ's settings module for the stack's worker (``RQ_CONFIG=deploy.app.rq_settings``).

``rq worker`` imports it in the worker process at start, so every work horse forks with the
jobs module and its HTTP stack already imported instead of importing them for each job (RQ's
own advice: preload heavy modules in the worker). It sets no RQ setting: those would be
UPPERCASE names here, and the Redis URL comes from ``RQ_REDIS_URL``.
"""

from __future__ import annotations

import deploy.app.rq_jobs  # noqa: F401  (the preload)

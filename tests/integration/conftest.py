"""Fixtures of the integration tests.

Nothing here imports a harness at module level: pytest's xdist controller loads this file
too, and a harness sets the session's key prefix (``QRL_PREFIX``) in the environment when it
is imported, which every worker would then inherit and share.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

import pytest

RIGS = [
    "celery-redis",
    "celery-rabbitmq",
    "dramatiq-redis",
    "dramatiq-rabbitmq",
    "rq-fork",
    "rq-simple",
]
"""Every (framework, broker or worker kind) a shared scenario runs on (rigs.py)."""


@pytest.fixture(params=RIGS)
def rig_of(
    request: pytest.FixtureRequest, redis_url: str
) -> Callable[..., AbstractContextManager[Any]]:
    """Opens this test's rig: ``rig_of(kills=False, **upstream)``."""
    from tests.integration.rigs import open_rig

    return partial(open_rig, request.param, redis_url)

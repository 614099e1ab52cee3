"""Fixtures of the integration tests."""

from __future__ import annotations

from functools import partial

import pytest

from tests.integration.rigs import RIGS, OpenRig, open_rig


@pytest.fixture(params=RIGS)
def rig_of(request: pytest.FixtureRequest, redis_url: str) -> OpenRig:
    """Opens this test's rig: ``rig_of(kills=False, **upstream)``."""
    return partial(open_rig, request.param, redis_url)

"""The SQL stores' rows as JSON: what one version writes, the same or a later one reads."""

from __future__ import annotations

import json

import pytest

from queue_ratelimit.backends import state_json as sj
from queue_ratelimit.policy.breaker import BreakerState
from queue_ratelimit.policy.state import BucketState, KeyState


def _state() -> KeyState:
    bucket = BucketState(rate=2.5, tokens=0.1 + 0.2, ts=1796591430.0502903, quota_left=7.0)
    bucket.leaves.append(1796591429.25)
    state = KeyState(epoch=3, cooldown_until=12.5, buckets={"requests": bucket})
    state.leases["lease-1"] = 99.0
    state.counts["requeued"] = 2
    return state


def test_a_state_reads_back_equal_floats_exact() -> None:
    state = _state()
    assert sj.state_from(sj.state_text(state)) == state


def test_fields_a_later_version_added_are_ignored_not_fatal() -> None:
    data = json.loads(sj.state_text(_state()))
    data["a_later_field"] = [1, 2]
    data["buckets"]["requests"]["another_one"] = {"x": 1}
    assert sj.state_from(json.dumps(data)) == _state()
    breaker = json.dumps({"state": "open", "failures": 4, "until": 8.0, "new": True})
    assert sj.breaker_from(breaker) == BreakerState("open", 4, 8.0)


@pytest.mark.parametrize(
    "text", ['{"not": "a state"}', "[]", '{"epoch": 1, "cooldown_until": 0, "buckets": 3}']
)
def test_a_row_that_is_not_a_state_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        sj.state_from(text)

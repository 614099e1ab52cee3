"""Limiter state as JSON, for the stores that keep the Python policy's objects as rows
(``SQLiteBackend``): a key's ``KeyState``, an integration's breaker and fair shares.

Floats round-trip exactly (``json`` writes ``repr``); a tenant of ``None`` (the shares and
activity of calls made without one) is written as ``null`` in a list of pairs.
"""

from __future__ import annotations

import json
from typing import Any

from queue_ratelimit.policy.breaker import BreakerState
from queue_ratelimit.policy.fair import FairState
from queue_ratelimit.policy.state import BucketState, KeyState

__all__ = [
    "breaker_from",
    "breaker_text",
    "fair_from",
    "fair_text",
    "state_from",
    "state_text",
]


def state_text(state: KeyState) -> str:
    """``state`` as JSON (its fields' dicts as they are: ``dataclasses.asdict`` deep-copies
    every value first, and took half of a decision's time)."""
    data = dict(vars(state))
    data["buckets"] = {name: vars(bucket) for name, bucket in state.buckets.items()}
    return json.dumps(data, separators=(",", ":"))


def _bucket(data: dict[str, Any]) -> BucketState:
    return BucketState(**data)


def state_from(text: str | bytes) -> KeyState:
    """The ``KeyState`` that ``state_text`` wrote."""
    data = json.loads(text)
    data["buckets"] = {name: _bucket(b) for name, b in data["buckets"].items()}
    return KeyState(**data)


def breaker_text(breaker: BreakerState) -> str:
    return json.dumps(vars(breaker), separators=(",", ":"))


def breaker_from(text: str | bytes | None) -> BreakerState:
    """The breaker ``breaker_text`` wrote (``None``: closed, nothing counted)."""
    return BreakerState() if text is None else BreakerState(**json.loads(text))


def fair_text(shares: FairState) -> str:
    data = {
        "shares": [[t, vars(b)] for t, b in shares.shares.items()],
        "active": [[t, until] for t, until in shares.active.items()],
        "used": list(shares.used),
    }
    return json.dumps(data, separators=(",", ":"))


def fair_from(text: str | bytes | None) -> FairState:
    """The fair shares ``fair_text`` wrote (``None``: none yet)."""
    if text is None:
        return FairState()
    data = json.loads(text)
    return FairState(
        shares={t: _bucket(b) for t, b in data["shares"]},
        active={t: until for t, until in data["active"]},
        used=(float(data["used"][0]), float(data["used"][1])),
    )

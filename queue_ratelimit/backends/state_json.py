"""Limiter state as JSON, for the stores that keep the Python policy's objects as rows
(``SQLiteBackend``): a key's ``KeyState``, an integration's breaker and fair shares.

Floats round-trip exactly (``json`` writes ``repr``); a tenant of ``None`` (the shares and
activity of calls made without one) is written as ``null`` in a list of pairs. A reader
ignores fields it does not know (a row written by a later version), and raises
``ValueError`` for a row that is not what it reads.
"""

from __future__ import annotations

import dataclasses
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


_FIELDS: dict[type, frozenset[str]] = {}
"""Each state class's field names (``dataclasses.fields`` is slow enough to show in a
decision's time)."""


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data``'s fields that ``cls`` has (a row another version wrote may hold more)."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    if names.issuperset(data):
        return data
    return {k: v for k, v in data.items() if k in names}


def _bucket(data: dict[str, Any]) -> BucketState:
    return BucketState(**_known(BucketState, data))


def state_from(text: str | bytes) -> KeyState:
    """The ``KeyState`` that ``state_text`` wrote; ``ValueError`` for anything else."""
    try:
        data = json.loads(text)
        data["buckets"] = {name: _bucket(b) for name, b in data["buckets"].items()}
        return KeyState(**_known(KeyState, data))
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a key's state: {exc!r}") from exc


def breaker_text(breaker: BreakerState) -> str:
    return json.dumps(vars(breaker), separators=(",", ":"))


def breaker_from(text: str | bytes | None) -> BreakerState:
    """The breaker ``breaker_text`` wrote (``None``: closed, nothing counted)."""
    if text is None:
        return BreakerState()
    try:
        return BreakerState(**_known(BreakerState, json.loads(text)))
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"not a breaker: {exc!r}") from exc


def fair_text(shares: FairState) -> str:
    data = {
        "shares": [[t, vars(b)] for t, b in shares.shares.items()],
        "active": [[t, until] for t, until in shares.active.items()],
        "used": list(shares.used),
        "told": [[t, at] for t, at in shares.told.items()],
    }
    return json.dumps(data, separators=(",", ":"))


def fair_from(text: str | bytes | None) -> FairState:
    """The fair shares ``fair_text`` wrote (``None``: none yet)."""
    if text is None:
        return FairState()
    try:
        data = json.loads(text)
        return FairState(
            shares={t: _bucket(b) for t, b in data["shares"]},
            active={t: until for t, until in data["active"]},
            used=(float(data["used"][0]), float(data["used"][1])),
            told={t: float(at) for t, at in data.get("told", [])},  # (absent: written before)
        )
    except (TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"not fair shares: {exc!r}") from exc

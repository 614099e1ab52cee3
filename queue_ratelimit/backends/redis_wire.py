"""The script's wire format: op codes, the packed plan and numbers, and the answers read
back (``lua/limiter.lua``'s header describes both sides)."""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from queue_ratelimit.policy import breaker as brk
from queue_ratelimit.policy.aimd import fresh_views
from queue_ratelimit.policy.overrides import Override
from queue_ratelimit.policy.state import LimitParams, LimitSnapshot, Plan, Snapshot


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


NONE = float("nan")  # "none" among the script's numbers


def opt(value: float | None) -> float:
    return NONE if value is None else value


def pack(numbers: Sequence[float]) -> bytes:
    """An op's numbers as the script reads them: little-endian doubles."""
    return struct.pack(f"<{len(numbers)}d", *numbers)  # struct caches the compiled format


def name_bytes(text: str) -> bytes:
    return text.encode() + b"\0"  # the script's 's': zero-terminated


MICRO = 1_000_000
NO_PLAN = Plan(limits=())
OPS = {  # each op's code in the script
    "acquire": 1,
    "success": 2,
    "backoff": 3,
    "failure": 4,
    "release": 5,
    "snapshot": 6,
    "count": 7,
    "breaker": 8,
    "view": 9,
    "admit": 10,
    "unprobe": 11,
    "outcome": 12,
    "snapshots": 13,
    "check": 14,
}
EVENTS = ("requeues", "backoffs", "budget_exhausted")  # counted per key (limiter.lua EVENTS)
HEAD = struct.Struct("<BdBd")  # op code, now (NaN: the server's TIME), the breaker passed in
# the script's reply codes (limiter.lua OK .. BREAKER_OPEN, and CLOSED, OPEN, HALF_OPEN)
REASONS = (
    "ok",
    "redeemed",
    "probe",
    "rate",
    "cooldown",
    "concurrency",
    "breaker_open",
    "exhausted",
)
LAST_GRANT = 2  # the reasons up to "probe" are grants
BREAKER_STATES = (brk.CLOSED, brk.OPEN, brk.HALF_OPEN)
CLOSED, OPEN, HALF_OPEN = 0, 1, 2


class View(NamedTuple):
    """The integration's breaker as this process last read or changed it, and the
    operators' overrides as last read (with the breaker, by a VIEW)."""

    state: int
    failures: int
    until: float  # on the server's clock
    read: float  # time.monotonic() when read
    overrides: Mapping[str | None, Override] = MappingProxyType({})
    version: str = ""  # the overrides' version (``#v``; "0" none set yet): a decision given
    # it answers STALE while the key it checks holds a later one (``redis_overrides.py``)


CLEAN = View(CLOSED, 0, 0.0, float("-inf"))
VERSION = "#v"  # the overrides' version's field (in the hash and in its copies)
STALE = -1  # an acquire's reply: the overrides changed since the view it was given


def override_field(tenant: str | None) -> str:
    """The overrides hash's field of a key: ``=`` the integration's, ``=T`` tenant T's."""
    return "=" if tenant is None else "=" + tenant


def version_from(pairs: Sequence[Any]) -> str:
    """The overrides' version among a VIEW's field, value pairs (``"0"``: none yet)."""
    for field, value in zip(pairs[::2], pairs[1::2], strict=False):
        if text(field) == VERSION:
            return text(value)
    return "0"


def overrides_from(pairs: Sequence[Any]) -> Mapping[str | None, Override]:
    """The overrides a VIEW answered (field, value pairs); unreadable ones are skipped."""
    held: dict[str | None, Override] = {}
    for field, value in zip(pairs[::2], pairs[1::2], strict=False):
        name = text(field)
        override = Override.from_json(value) if name.startswith("=") else None
        if override is not None:
            held[name[1:] or None] = override
    return MappingProxyType(held)


def limit_numbers(lim: LimitParams) -> tuple[float, ...]:
    """A limit's numbers in the order the script (and the description) lists them: rate,
    burst, min_rate, max_rate, increase, decrease, window (``LimitParams``' own order)."""
    return dataclasses.astuple(lim)[1:]


def plan_json(plan: Plan, idle_ttl: float) -> str:
    """The description of an integration the tools read (``{P:I}:meta``)."""
    return json.dumps(
        {
            "limits": [[lim.name, *limit_numbers(lim)] for lim in plan.limits],
            "max_concurrent": plan.max_concurrent,
            "lease_ttl": plan.lease_ttl,
            "cooldown_multiplier": plan.cooldown_multiplier,
            "max_backoff": plan.max_backoff,
            "max_quota_wait": plan.max_quota_wait,
            "breaker_threshold": plan.breaker_threshold,
            "breaker_open_seconds": plan.breaker_open_seconds,
            "slow_start": plan.slow_start,
            "idle_ttl": idle_ttl,
            "app": None
            if plan.app is None
            else [[lim.name, *limit_numbers(lim)] for lim in plan.app.limits],
            "app_backoffs": plan.app_backoffs,
        },
        separators=(",", ":"),
    )


def plan_from_json(text: str) -> Plan:
    """The plan a description holds; ``ValueError`` when it is not one."""
    data = json.loads(text)
    try:
        limits = tuple(LimitParams(str(e[0]), *(float(x) for x in e[1:8])) for e in data["limits"])
        app = None
        if data.get("app"):
            app = Plan(
                limits=tuple(
                    LimitParams(str(e[0]), *(float(x) for x in e[1:8])) for e in data["app"]
                ),
                cooldown_multiplier=float(data["cooldown_multiplier"]),
                max_backoff=float(data["max_backoff"]),
                max_quota_wait=float(data.get("max_quota_wait", 86400.0)),
            )
        return Plan(
            limits=limits,
            max_concurrent=data["max_concurrent"],
            lease_ttl=float(data["lease_ttl"]),
            cooldown_multiplier=float(data["cooldown_multiplier"]),
            max_backoff=float(data["max_backoff"]),
            max_quota_wait=float(data.get("max_quota_wait", 86400.0)),
            breaker_threshold=int(data["breaker_threshold"]),
            breaker_open_seconds=float(data["breaker_open_seconds"]),
            slow_start=bool(data.get("slow_start", True)),
            app=app,
            app_backoffs=str(data.get("app_backoffs", "tenant")),
        )
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not an integration description: {exc}") from exc


def snapshot_from(reply: Sequence[Any], view: View, plan: Plan) -> Snapshot:
    """A ``Snapshot`` from the script's answer and the breaker's view."""
    now = reply[1] / MICRO
    wait = max(0.0, view.until - now) if view.state != CLOSED else 0.0
    breaker = (BREAKER_STATES[view.state], int(view.failures), wait)
    if reply[0] != 1:
        return Snapshot(False, 0, 0.0, 0, now, fresh_views(plan.limits), *breaker)
    epoch, cool, leases = reply[2], reply[3] / MICRO, reply[4]
    counts = counts_from(reply)
    name = text(reply[8]) or None
    views = []
    rest = reply[9:]
    for i in range(0, len(rest), 3):
        tokens = rest[i + 2] / MICRO
        views.append(LimitSnapshot(text(rest[i]), rest[i + 1] / MICRO, tokens, max(0.0, -tokens)))
    return Snapshot(True, epoch, cool, leases, now, tuple(views), *breaker, counts, name)


def counts_from(reply: Sequence[Any]) -> dict[str, int]:
    """The event counts in the script's snapshot of a key (none when it has no state)."""
    if reply[0] != 1 or not (reply[5] or reply[6] or reply[7]):  # (most keys count nothing)
        return {}
    return {event: int(reply[5 + i]) for i, event in enumerate(EVENTS) if reply[5 + i]}

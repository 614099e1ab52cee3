"""The CLI's tables: keys laid out to fit the terminal, most important columns first.

A column that does not fit is left out, lowest priority first; the tenant column takes the
width left. A long name (integration or tenant) shows its tail, where names differ, and two
names never shorten to the same text. Numbers have three significant digits; a bucket below zero is
shown as ``owed N``.
"""

from __future__ import annotations

import datetime
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table

from queue_ratelimit.inspection import Key, KeyState, utc_text
from queue_ratelimit.policy.overrides import Override, combined

__all__ = ["number", "shorten", "status_table", "top_table"]

ELLIPSIS = "…"
TENANT_MIN = 8  # the tenant column is never narrower (other columns go first)
INTEGRATION_MAX = 16


def number(value: float) -> str:
    """``value`` with three significant digits (whole numbers from 1,000 on)."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if abs(value) >= 999.5:
        return f"{value:,.0f}"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    if len(text.replace("-", "").replace(".", "").lstrip("0")) > 3 and decimals > 0:
        text = f"{value:.{decimals - 1}f}"  # 9.996 rounds up to 10.0, not 10.00
    return text


def tokens_text(state: KeyState) -> str:
    return f"owed {number(state.owed)}" if state.tokens < 0 else number(state.tokens)


def shorten(names: Sequence[str], width: int) -> list[str]:
    """``names`` cut to ``width`` characters each, keeping their tails, and never two
    different names to the same text (a middle cut, else a digest, tells them apart)."""
    width = max(width, 4)
    cut = [name if len(name) <= width else ELLIPSIS + name[-(width - 1) :] for name in names]
    owners: dict[str, set[str]] = {}
    for name, short in zip(names, cut, strict=True):
        owners.setdefault(short, set()).add(name)
    for i, (name, short) in enumerate(zip(names, cut, strict=True)):
        if len(owners[short]) < 2:
            continue
        for head in range(1, width - 2):  # the head as well as the tail
            candidate = name[:head] + ELLIPSIS + name[-(width - 1 - head) :]
            if sum(n[:head] == name[:head] for n in owners[short]) == 1:
                cut[i] = candidate
                break
        else:
            cut[i] = _digested(name, width)
    seen: dict[str, str] = {}
    for i, (name, short) in enumerate(zip(names, cut, strict=True)):
        if seen.setdefault(short, name) != name:  # a middle cut met another name's text
            cut[i] = _digested(name, width)
    return cut


def _digested(name: str, width: int) -> str:
    """``name`` in ``width`` characters told apart by a digest of the whole of it."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    if width < 10:
        return digest[:width]
    return f"{ELLIPSIS}{digest[:6]}{ELLIPSIS}{name[-(width - 8) :]}"


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[KeyState], str]
    priority: int  # lower goes first when the width runs out; 0: always shown
    justify: str = "right"


def _per_second(rates: Mapping[Key, Mapping[str, float]], event: str) -> Callable[[KeyState], str]:
    return lambda state: number(rates.get(state.key, {}).get(event, 0.0))


def _cooldown(state: KeyState) -> str:
    until = state.exhausted_until
    if until is not None:
        return f"exhausted until {utc_text(until)}"
    left = state.snapshot.cooldown_left if state.snapshot else 0.0
    return f"{number(left)}s" if left > 0 else "-"


def _breaker(state: KeyState) -> str:
    snap = state.snapshot
    if snap is None:
        return "-"
    return snap.breaker + (f" {number(snap.breaker_wait)}s" if snap.breaker_wait > 0 else "")


def _reserved(state: KeyState) -> str:
    snap = state.snapshot
    return number(snap.limits[0].reserved) if snap and snap.limits else "-"


def _described(cell: Callable[[KeyState], str]) -> Callable[[KeyState], str]:
    """``cell``, or ``-`` for a key with no limits described."""
    return lambda state: cell(state) if state.snapshot is not None else "-"


def _bounds(state: KeyState) -> str:
    plan = state.plan
    if plan is None or not plan.limits:
        return "-"
    limit = plan.limits[0]
    return f"{number(state.rate)} ({number(limit.min_rate)}-{number(limit.max_rate)})"


def _render(
    title: str, keys: Sequence[KeyState], columns: list[Column], width: int, caption: str = ""
) -> Table:
    """A table of ``keys`` in ``width`` characters (see the module)."""
    integrations = [s.integration for s in keys]
    tenants = [s.tenant_name or "-" for s in keys]
    cells = {c.header: [c.cell(s) for s in keys] for c in columns}

    def need(header: str, values: Sequence[str]) -> int:
        return max([len(header), *map(len, values)])

    integration_width = min(INTEGRATION_MAX, need("integration", integrations))
    shown = sorted(columns, key=lambda c: c.priority)  # droppable last ones first
    while True:
        used = integration_width + sum(need(c.header, cells[c.header]) for c in shown)
        gaps = 3 * (len(shown) + 1) + 2  # three between columns, one at each edge
        left = width - used - gaps
        if left >= TENANT_MIN or not shown or shown[-1].priority == 0:
            break
        shown.pop()  # the least important column goes
    tenant_width = max(TENANT_MIN, min(left, need("tenant", tenants)))
    table = Table(title=title, caption=caption or None, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("integration", no_wrap=True, width=integration_width)
    table.add_column("tenant", no_wrap=True, width=tenant_width)
    order = [c for c in columns if c in shown]
    for column in order:
        table.add_column(column.header, justify=column.justify, no_wrap=True)  # type: ignore[arg-type]
    named = shorten(integrations, integration_width)
    short = shorten(tenants, tenant_width)
    for i in range(len(keys)):
        table.add_row(named[i], short[i], *(cells[c.header][i] for c in order))
    return table


def top_table(
    keys: Sequence[KeyState],
    rates: Mapping[Key, Mapping[str, float]],
    width: int,
    *,
    sort: str = "requeues",
    total: int | None = None,
) -> Table:
    """``top``'s table: ``keys`` (already sorted and cut to the screen) with their events
    per second; ``total`` keys in all."""
    columns = [
        Column("rate", _described(lambda s: number(s.rate)), 0),
        Column("tokens", _described(tokens_text), 1),
        Column("requeues/s", _per_second(rates, "requeues"), 2),
        Column("429s/s", _per_second(rates, "backoffs"), 3),
        Column("cooldown", _described(_cooldown), 4),
        Column("breaker", _breaker, 5, "left"),
        Column("reserved", _described(_reserved), 6),
    ]
    total = len(keys) if total is None else total
    title = (
        f"queue_ratelimit top: {total:,} key{'' if total == 1 else 's'}, by {sort} (Ctrl-C to quit)"
    )
    caption = f"{total - len(keys):,} more not shown" if total > len(keys) else ""
    return _render(title, keys, columns, width, caption)


def status_table(keys: Sequence[KeyState], title: str, width: int, caption: str = "") -> Table:
    """``status``'s table: every column that fits."""
    columns = [
        Column("rate (min-max)", _bounds, 0),
        Column("tokens", _described(tokens_text), 1),
        Column("cooldown", _described(_cooldown), 2),
        Column("breaker", _breaker, 3, "left"),
        Column("reserved", _described(_reserved), 4),
        Column("leases", _described(lambda s: str(s.snapshot.leases) if s.snapshot else "-"), 5),
    ]
    return _render(title, keys, columns, width, caption)


def override_text(override: Override) -> str:
    """An override in one line: its bounds, who set it and when (UTC)."""
    bounds = []
    if override.max_rate is not None and override.max_rate == override.min_rate:
        bounds.append(f"pinned at {override.max_rate:g}/s")
    else:
        if override.max_rate is not None:
            bounds.append(f"max {override.max_rate:g}/s")
        if override.min_rate is not None:
            bounds.append(f"min {override.min_rate:g}/s")
    when = datetime.datetime.fromtimestamp(override.at, datetime.timezone.utc)
    return f"{', '.join(bounds)} (set by {override.by or '?'} at {when:%Y-%m-%d %H:%M:%S} UTC)"


def with_override(
    row: dict[str, Any], overrides: Mapping[str | None, Override], tenant: str | None
) -> dict[str, Any]:
    """A ``status --json`` row with the bounds that hold for its key, when any do."""
    bounds = combined(overrides, tenant)
    if bounds is not None:
        row["override"] = {"max_rate": bounds[0], "min_rate": bounds[1]}
    return row


def key_text(integration: str, tenant: str | None) -> str:
    """A key as the CLI's lines name it."""
    return f"{integration}:{tenant}" if tenant else f"{integration} (all its keys)"

"""The plain-text tables both benchmark scripts print."""

from __future__ import annotations

from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """Plain-text table; ``align`` holds ``l`` or ``r`` per column."""
    widths = [max(len(c) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        pads = zip(cells, widths, align, strict=True)
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in pads).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])

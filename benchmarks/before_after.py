"""Run one benchmark on an earlier commit's package and on this checkout's, side by side.

    python benchmarks/before_after.py REF [--rounds N] -- SCRIPT [ARGS ...]

REF's ``queue_ratelimit`` is checked out into a temporary git worktree; ``python SCRIPT
ARGS`` (this checkout's script: it must use only the public API both trees share) then runs
alternately with the package imported from REF's tree and from this one (B A A B B A ...),
so that the machine's drift falls on both alike. For every table row of the script's output
whose first cell starts with ``queue_ratelimit``, it prints the median of each figure per
side and the ratio after / before. A run's figures measured against a floor in the same run
(``vs raw``) are the ones to quote on a noisy machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from text_table import table

ROOT = Path(__file__).resolve().parents[1]
_CELLS = re.compile(r"\s{2,}")
Rows = dict[str, list[list[float]]]


def _number(cell: str) -> float | None:
    text = cell.replace(",", "").rstrip("x").lstrip("+")
    try:
        return float(text)
    except ValueError:
        return None


def rows_of(output: str) -> dict[str, list[float]]:
    """The figures of each ``queue_ratelimit`` row, keyed by its leading words."""
    found: dict[str, list[float]] = {}
    for line in output.splitlines():
        cells = _CELLS.split(line.strip())
        if not cells or not cells[0].startswith("queue_ratelimit"):
            continue
        words = [c for c in cells if _number(c) is None]
        figures = [n for c in cells if (n := _number(c)) is not None]
        if figures:
            found[" / ".join(words)] = figures
    return found


def run(tree: Path, script: list[str]) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT / "benchmarks")])}
    done = subprocess.run(
        [sys.executable, *script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return rows_of(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="the commit to compare against (before)")
    parser.add_argument("--rounds", type=int, default=3)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    script = argv[cut + 1 :]
    if not script:
        parser.error("give the benchmark after --")
    results: dict[str, Rows] = {"before": defaultdict(list), "after": defaultdict(list)}
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), args.ref],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            for index in range(args.rounds):
                order = [("before", before), ("after", ROOT)]
                for side, tree in order if index % 2 else order[::-1]:
                    for key, figures in run(tree, script).items():
                        results[side][key].append(figures)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False
            )
    print(f"{' '.join(script)}: {args.rounds} rounds, before = {args.ref}, after = this checkout")
    out = []
    for key in results["after"]:
        medians = {
            side: [statistics.median(col) for col in zip(*results[side][key], strict=True)]
            for side in ("before", "after")
            if results[side].get(key)
        }
        if len(medians) < 2:
            continue
        ratios = [
            a / b if b else float("nan")
            for a, b in zip(medians["after"], medians["before"], strict=True)
        ]
        out.append([key, *(f"{m:,.2f}" for m in medians["before"])])
        out.append(["  after", *(f"{m:,.2f}" for m in medians["after"])])
        out.append(["  after / before", *(f"{r:.3f}" for r in ratios)])
    width = max((len(row) for row in out), default=1)
    header = ["row (medians)", *(f"figure {i + 1}" for i in range(width - 1))]
    rows = [row + [""] * (width - len(row)) for row in out]
    print(table(header, rows, "l" + "r" * (width - 1)))


if __name__ == "__main__":
    main()

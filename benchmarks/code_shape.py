"""The package's shape: functions over 40 lines (with their parameter counts) and the size of
each module under ``queue_ratelimit/integrations``. Run before and after a redesign::

    python benchmarks/code_shape.py [PACKAGE_DIR]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LONG = 40


def long_functions(root: Path) -> list[tuple[int, int, str]]:
    """(lines, parameters, dotted name) of every function longer than ``LONG`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for child in node.body:
                    child.parent_name = node.name  # type: ignore[attr-defined]
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines <= LONG:
                continue
            args = node.args
            params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
            params += [a for a in (args.vararg, args.kwarg) if a is not None]
            count = len([p for p in params if p.arg not in ("self", "cls")])
            owner = getattr(node, "parent_name", None)
            name = f"{module}.{owner}.{node.name}" if owner else f"{module}.{node.name}"
            found.append((lines, count, name))
    return sorted(found, reverse=True)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "queue_ratelimit").resolve()
    print(f"functions over {LONG} lines (lines / parameters):")
    for lines, count, name in long_functions(root):
        print(f"  {lines:4d} {count:3d}  {name}")
    print("integration modules (lines):")
    total = 0
    for path in sorted((root / "integrations").glob("*.py")):
        size = len(path.read_text(encoding="utf-8").splitlines())
        total += size
        print(f"  {size:5d}  {path.name}")
    print(f"  {total:5d}  total")


if __name__ == "__main__":
    main()

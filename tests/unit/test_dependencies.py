"""Every third-party module the project imports is declared in pyproject.toml.

A development machine's base Python may hold packages a user's fresh virtualenv lacks; this
test walks the imports of the package, the tests, the benchmarks, the deploy app and the
examples (and the docs build's plugins) and names any top-level module whose distribution no
dependency list declares, so a green run cannot hide a missing install step.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
WALKED = ("queue_ratelimit", "tests", "benchmarks", "deploy", "examples")
LOCAL = {"queue_ratelimit", "tests", "benchmarks", "deploy", "examples"}
# in the standard library of a later Python than the oldest we support, imported behind a
# version check (registry.py: tomllib, else the declared backport tomli)
LATER_STDLIB = {"tomllib"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    """Distributions named by the dependencies and every extra, the project's own extras
    (``queue_ratelimit[celery]``) resolved to their lists."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lists = [project.get("dependencies", []), *project.get("optional-dependencies", {}).values()]
    names = {_norm(re.split(r"[\s\[<>=!~;@]", req, maxsplit=1)[0]) for r in lists for req in r}
    return names | {_norm(project["name"])}


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def _docs_modules() -> Iterator[tuple[str, str]]:
    """The modules the docs build loads: the theme and the Markdown extensions."""
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.SafeLoader)
    yield "material", "mkdocs.yml theme"
    for extension in config.get("markdown_extensions", []):
        name = next(iter(extension)) if isinstance(extension, dict) else extension
        if "." in name:  # a dotted name is a module; a bare one is Python-Markdown's own
            yield name.split(".")[0], f"mkdocs.yml markdown_extensions {name}"


def _used() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for folder in WALKED:
        for path in (ROOT / folder).rglob("*.py"):
            siblings = {p.stem for p in path.parent.iterdir()}
            for top in _imports(path):
                if top not in siblings:  # a script's own neighbour (benchmarks/goodput_*.py)
                    used.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    for top, where in _docs_modules():
        used.setdefault(top, set()).add(where)
    return used


def _undeclared() -> list[str]:
    declared = _declared()
    distributions = metadata.packages_distributions()
    problems = []
    for top, files in sorted(_used().items()):
        if top in sys.stdlib_module_names or top in LOCAL or top in LATER_STDLIB:
            continue
        dists = distributions.get(top)
        if dists and any(_norm(d) in declared for d in dists):
            continue
        if not dists and _norm(top) in declared:
            continue  # declared under its own name, for other interpreters only (tomli)
        found = f"from {', '.join(sorted(set(dists)))}" if dists else "not installed"
        problems.append(f"{top} ({found}): imported in {', '.join(sorted(files)[:3])}")
    return problems


def test_every_imported_module_is_declared_in_pyproject() -> None:
    problems = _undeclared()
    assert not problems, "declare these in pyproject.toml (dev for test tools):\n" + "\n".join(
        problems
    )


def test_the_walk_sees_third_party_imports() -> None:
    used = _used()
    # the walk reaches the package, the tests and the docs build: a broken walk that found
    # nothing would pass the test above
    assert {"redis", "celery", "pytest", "hypothesis", "material", "pymdownx"} <= set(used)
    assert any(f.startswith("queue_ratelimit/") for f in used["redis"])
    assert any(f.startswith("tests/") for f in used["pytest"])

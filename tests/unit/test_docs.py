"""The documentation site: generated reference pages, navigation, and a strict build."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from queue_ratelimit.config import IntegrationConfig, LimitConfig
from queue_ratelimit.dialect import Dialect
from queue_ratelimit.registry import BUILTIN_INTEGRATIONS, BUILTIN_NOTES, BUILTIN_SOURCES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qrl_docs_hook", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _hook()


def _rows(table: str) -> dict[str, str]:
    """Table rows keyed by the first cell's code span."""
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\| \[?`([^`]+)`", line)
        if match:
            rows[match.group(1)] = line
    return rows


@pytest.mark.parametrize("cls", [IntegrationConfig, LimitConfig])
def test_the_field_reference_lists_every_field_with_type_default_and_help(cls: Any) -> None:
    rows = _rows(hook.expand(f"<!-- qrl:fields {cls.__name__} -->", ROOT))
    helps = cls.fields_help()
    assert list(rows) == [f.name for f in dataclasses.fields(cls)]
    for field in dataclasses.fields(cls):
        row = rows[field.name]
        assert helps[field.name] and hook.cell(helps[field.name]) in row
        assert f"`{field.type}`" in row
        default = hook.default_of(field)
        assert ("required" if default is dataclasses.MISSING else hook.spell(default)) in row


def test_defaults_are_spelled_as_an_override_file_spells_them() -> None:
    rows = _rows(hook.fields_table(IntegrationConfig))
    assert "`[429, 503]`" in rows["backoff_status_codes"]
    assert "`null`" in rows["max_concurrent"]
    assert "`{}`" in rows["limits"]
    assert "`int | None`" in rows["max_concurrent"]  # a pipe in a code span stays unescaped


def test_every_builtin_has_a_one_line_source_and_a_note() -> None:
    assert list(BUILTIN_SOURCES) == list(BUILTIN_INTEGRATIONS)
    assert list(BUILTIN_NOTES) == list(BUILTIN_INTEGRATIONS)
    for name, source in BUILTIN_SOURCES.items():
        assert source.strip() and "\n" not in source, name
    urls = {name: hook.URL.search(source) for name, source in BUILTIN_SOURCES.items()}
    assert [name for name, url in urls.items() if url is None] == ["fieldguide"]


def test_the_builtins_table_lists_every_integration_with_its_values_and_source() -> None:
    rows = _rows(hook.builtins_table())
    assert list(rows) == list(BUILTIN_INTEGRATIONS)
    for name, config in BUILTIN_INTEGRATIONS.items():
        row = rows[name]
        rate, burst = f"{config.rate_limit_per_sec:.4g}", f"{config.burst_size:.4g}"
        assert f"| {rate} | {burst} |" in row
        assert f"{config.min_rate:.4g} - {config.max_rate:.4g}" in row
        url = hook.URL.search(BUILTIN_SOURCES[name])
        assert (f"]({url.group(0)})" if url else "none published") in row
    assert "`max_concurrent` 10" in rows["github"]
    assert "/search/code to `github-code-search`; /search/ to `github-search`" in rows["github"]
    assert "limit `tokens`" in rows["openai"]


def test_the_sources_section_quotes_each_source_and_note() -> None:
    text = hook.builtin_sources()
    for name in BUILTIN_INTEGRATIONS:
        assert f"### {name}\n" in text
        assert hook.linkify(BUILTIN_SOURCES[name]) in text
        assert BUILTIN_NOTES[name] in text


def test_an_unknown_marker_or_class_fails_the_build() -> None:
    with pytest.raises(hook.MarkerError, match="unknown marker"):
        hook.expand("<!-- qrl:nothing -->", ROOT)
    with pytest.raises(hook.MarkerError, match="known classes"):
        hook.expand("<!-- qrl:fields Limiter -->", ROOT)
    with pytest.raises(hook.MarkerError, match="no file"):
        hook.expand("<!-- qrl:include-body ../outside.md -->", ROOT)


def _nav_pages(entries: Any) -> list[str]:
    pages: list[str] = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


NOT_YET_IN_NAV = {"examples.md", "compose.md"}
"""Pages written alongside the site that join the nav when they are integrated."""


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    pages = {
        str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md") if "hooks" not in path.parts
    }
    assert len(nav) == len(set(nav))
    assert set(nav) <= pages
    assert pages - set(nav) <= NOT_YET_IN_NAV
    assert config["hooks"] == ["docs/hooks/reference.py"]


def test_the_benchmark_summary_describes_the_included_run() -> None:
    summary = (DOCS / "benchmarks.md").read_text()
    run = re.search(r"run of (\d{4}-\d{2}-\d{2})", summary)
    assert run is not None
    assert f", {run.group(1)}," in (ROOT / "benchmarks" / "README.md").read_text()


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    reference = (site / "reference" / "configuration" / "index.html").read_text()
    for field in dataclasses.fields(IntegrationConfig):
        assert f"<code>{field.name}</code>" in reference
    integrations = (site / "reference" / "integrations" / "index.html").read_text()
    assert all(f'id="{name}"' in integrations for name in BUILTIN_INTEGRATIONS)


@pytest.mark.parametrize("page", hook.KEPT)
def test_the_reference_pages_keep_their_generated_tables_and_they_are_current(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = hook.MARKER.findall(text)
    assert blocks and all(block[2] for block in blocks)  # every table is in the repository
    assert hook.expand(text, ROOT) == text, "stale: run python docs/hooks/reference.py"


def test_a_kept_block_is_written_afresh_and_a_bare_marker_still_expands() -> None:
    stale = "# t\n\n<!-- qrl:signals -->\n| old |\n<!-- /qrl -->\n\ntail\n"
    fresh = hook.expand(stale, ROOT)
    assert (
        "| old |" not in fresh
        and "`backoff`" in fresh
        and fresh.endswith("<!-- /qrl -->\n\ntail\n")
    )
    assert hook.expand(fresh, ROOT) == fresh
    bare = hook.expand("<!-- qrl:signals -->\n\ntail <!-- /qrl -->\n", ROOT)
    assert "`backoff`" in bare and "<!-- qrl:" not in bare


def test_the_dialects_page_names_every_dialect_field() -> None:
    table = (DOCS / "dialects.md").read_text(encoding="utf-8").split("\n## ")[0]
    missing = [f.name for f in dataclasses.fields(Dialect) if f"`{f.name}`" not in table]
    assert missing == []

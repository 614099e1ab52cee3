"""MkDocs hook: write the reference tables from the code at build time.

A page asks for a table with an HTML comment on a line of its own; the hook replaces it
before the Markdown is rendered, so no hand-kept copy of a field, default or source can
drift from the code:

* ``<!-- qrl:fields IntegrationConfig -->`` / ``<!-- qrl:fields LimitConfig -->``: every
  dataclass field with its type, default and the help text of its metadata.
* ``<!-- qrl:builtins -->``: every entry of ``BUILTIN_INTEGRATIONS`` with the values that
  differ from ``IntegrationConfig``'s defaults and the source of its figures.
* ``<!-- qrl:builtin-sources -->``: one section per built-in: its source and how the values
  follow from it.
* ``<!-- qrl:signals -->``: the signal catalogue of ``queue_ratelimit.signals``.
* ``<!-- qrl:include-body PATH -->``: a Markdown file of the repository (``PATH`` relative
  to ``mkdocs.yml``) without its first-level title.

A marker followed by generated text and a closing ``<!-- /qrl -->`` line is a block kept
in the repository (so the page reads whole on GitHub too): the build writes it afresh, and
``python docs/hooks/reference.py`` rewrites the pages' blocks from the code (a test fails
while one is stale).

An unknown marker, class or path fails the build. Registered in ``mkdocs.yml`` under
``hooks:``; the tests import it by path (``tests/unit/test_docs.py``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from queue_ratelimit import signals
from queue_ratelimit.config import IntegrationConfig, LimitConfig
from queue_ratelimit.dialect import GENERIC, Dialect
from queue_ratelimit.registry import BUILTIN_INTEGRATIONS, BUILTIN_NOTES, BUILTIN_SOURCES

MARKER = re.compile(
    r"^<!--\s*qrl:([a-z-]+)(?:\s+(\S+))?\s*-->[ \t]*"
    r"(\n(?:(?:(?!<!--\s*qrl:).)*?\n)?<!-- /qrl -->[ \t]*)?$",
    re.M | re.S,
)
END = "<!-- /qrl -->"
KEPT = ("reference/configuration.md", "reference/integrations.md", "reference/signals.md")
"""The pages whose generated blocks are kept in the repository (relative to docs/)."""
URL = re.compile(r"https?://[^\s)]+[^\s).,;]")
CLASSES: Mapping[str, type[Any]] = {
    "IntegrationConfig": IntegrationConfig,
    "LimitConfig": LimitConfig,
}
SHOWN = ("name", "rate_limit_per_sec", "burst_size", "min_rate", "max_rate")
"""Fields with a column of their own in the built-ins table."""


class MarkerError(Exception):
    """A page asks for something the hook cannot produce; the build stops."""


# -- values -------------------------------------------------------------------------------


def plain(value: object) -> object:
    """``value`` as an override file spells it: sets sorted, limits as a table by name."""
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, (set, frozenset)):
        return sorted(plain(item) for item in value)  # type: ignore[type-var]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Dialect):  # the fields it sets
        generic = GENERIC.to_dict()
        return {k: plain(v) for k, v in value.to_dict().items() if v != generic.get(k)}
    if isinstance(value, tuple) and all(isinstance(item, LimitConfig) for item in value):
        return {item.name: {k: plain(v) for k, v in item.to_dict().items()} for item in value}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def spell(value: object) -> str:
    """One value as JSON (what TOML, JSON and environment overrides accept)."""
    return json.dumps(plain(value), default=str, ensure_ascii=False)


def default_of(field: dataclasses.Field[Any]) -> object:
    """A field's default; ``dataclasses.MISSING`` when the field is required."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    """``text`` as a code span in a table cell (a pipe inside a code span needs no escape)."""
    return "`" + text.replace("\n", " ") + "`"


def linkify(text: str) -> str:
    """``text`` with each bare URL turned into a Markdown link."""
    return URL.sub(lambda m: f"<{m.group(0)}>", text)


# -- tables -------------------------------------------------------------------------------


def fields_table(cls: type[Any]) -> str:
    """Every field of the config dataclass ``cls``: name, type, default, help."""
    helps = cls.fields_help()
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
        default = default_of(field)
        shown = "required" if default is dataclasses.MISSING else code(spell(default))
        rows.append(
            f"| `{field.name}` | {code(str(kind))} | {shown} | {cell(helps.get(field.name, ''))} |"
        )
    return "\n".join(rows)


def _number(value: float) -> str:
    return f"{value:.4g}"


def _differences(config: IntegrationConfig) -> list[str]:
    """``field = value`` for each field (besides SHOWN) that differs from the default."""
    changed = []
    for field in dataclasses.fields(IntegrationConfig):
        if field.name in SHOWN:
            continue
        value = getattr(config, field.name)
        if value == default_of(field):
            continue
        if field.name == "limits":
            for limit in value:
                settings = ", ".join(f"{k} {spell(v)}" for k, v in limit.to_dict().items())
                changed.append(f"limit `{limit.name}`: {settings}")
        elif field.name == "endpoints":
            routes = (
                f"{' '.join(endpoint.methods)} {', '.join(endpoint.paths)}".strip()
                + f" to `{endpoint.integration}`"
                for endpoint in value
            )
            changed.append("`endpoints`: " + "; ".join(routes))
        elif field.name == "dialect":
            settings = ", ".join(f"{k} {spell(v)}" for k, v in plain(value).items())
            changed.append(f"dialect: {settings}")
        else:
            changed.append(f"`{field.name}` {spell(value)}")
    return changed


def _source_link(source: str) -> str:
    match = URL.search(source)
    if match is None:
        return "none published"
    return f"[{urllib.parse.urlsplit(match.group(0)).netloc}]({match.group(0)})"


def builtins_table() -> str:
    """One row per built-in integration: rates, other non-default values, source."""
    rows = [
        "| integration | start rate /s | burst | min - max /s | other settings | source |",
        "|---|---|---|---|---|---|",
    ]
    for name, config in BUILTIN_INTEGRATIONS.items():
        others = "<br>".join(cell(item) for item in _differences(config)) or "-"
        source = _source_link(BUILTIN_SOURCES.get(name, ""))
        rows.append(
            f"| [`{name}`](#{name}) | {_number(config.rate_limit_per_sec)} "
            f"| {_number(config.burst_size)} "
            f"| {_number(config.min_rate)} - {_number(config.max_rate)} | {others} | {source} |"
        )
    return "\n".join(rows)


def builtin_sources() -> str:
    """One section per built-in: where its figures come from, and why these values."""
    parts = []
    for name in BUILTIN_INTEGRATIONS:
        source = BUILTIN_SOURCES.get(name)
        if not source:
            raise MarkerError(f"built-in integration {name!r} has no BUILTIN_SOURCES entry")
        lines = [f"### {name}", "", f"**Source:** {linkify(source)}"]
        note = BUILTIN_NOTES.get(name, "")
        if note:
            lines += ["", f"**Values:** {note}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def signals_table() -> str:
    """Every signal of ``queue_ratelimit.signals`` with its documentation."""
    rows = ["| signal | when, and its fields |", "|---|---|"]
    for name in signals.__all__:
        signal = getattr(signals, name)
        if name == "emit" or not hasattr(signal, "receivers"):
            continue
        rows.append(f"| `{name}` | {cell(signal.__doc__ or '')} |")
    return "\n".join(rows)


def include_body(root: Path, relative: str) -> str:
    """The Markdown file ``relative`` (to ``root``) without its first-level title."""
    path = (root / relative).resolve()
    if not path.is_file() or root.resolve() not in path.parents:
        raise MarkerError(f"qrl:include-body: no file {relative!r} in the repository")
    text = path.read_text(encoding="utf-8")
    return re.sub(r"\A\s*# [^\n]*\n+", "", text, count=1)


# -- the hook -----------------------------------------------------------------------------


def expand(markdown: str, root: Path) -> str:
    """Replace every ``<!-- qrl:... -->`` marker of ``markdown``; ``root`` holds mkdocs.yml."""
    makers: dict[str, Callable[[str | None], str]] = {
        "fields": lambda arg: fields_table(_class(arg)),
        "builtins": lambda arg: builtins_table(),
        "builtin-sources": lambda arg: builtin_sources(),
        "signals": lambda arg: signals_table(),
        "include-body": lambda arg: include_body(root, arg or ""),
    }

    def replace(match: re.Match[str]) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind not in makers:
            raise MarkerError(f"unknown marker qrl:{kind}; known: {', '.join(makers)}")
        made = makers[kind](arg)
        if match.group(3) is None:
            return made
        marker = match.group(0).split("\n", 1)[0]
        return f"{marker}\n{made.strip()}\n{END}"  # a kept block, written afresh

    return MARKER.sub(replace, markdown)


def write_kept(root: Path) -> list[str]:
    """Rewrite the kept blocks of the ``KEPT`` pages from the code; the pages changed."""
    changed = []
    for relative in KEPT:
        path = root / "docs" / relative
        text = path.read_text(encoding="utf-8")
        fresh = expand(text, root)
        if fresh != text:
            path.write_text(fresh, encoding="utf-8")
            changed.append(relative)
    return changed


def _class(name: str | None) -> type[Any]:
    if name is None or name not in CLASSES:
        raise MarkerError(f"qrl:fields {name}: known classes are {', '.join(CLASSES)}")
    return CLASSES[name]


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill the page's markers (a ``PluginError`` names the page on failure)."""
    from mkdocs.exceptions import PluginError

    try:
        return expand(markdown, Path(config["config_file_path"]).parent)
    except MarkerError as exc:
        raise PluginError(f"{page.file.src_path}: {exc}") from exc


if __name__ == "__main__":
    for page in write_kept(Path(__file__).resolve().parents[2]):
        print(f"rewrote docs/{page}")

"""Built-in integration defaults and the override layers that adjust them.

Precedence, lowest first: :data:`BUILTIN_INTEGRATIONS` < TOML file < JSON file < environment.
Every loader is a pure function returning an :data:`Overrides` mapping
(``{integration: {field: value, "limits": {limit: {field: value}}}}``);
:func:`merge_configs` folds layers onto a base and validates the result. Nothing here reads
a file or the environment at import time.

TOML (``queue-ratelimit.toml``)::

    [notion]
    max_rate = 5.0

    [openai.limits.tokens]
    max_rate = 800.0

JSON takes the same shape (the seed library's override format). Environment variables are
``QUEUE_RATELIMIT__<INTEGRATION>__<FIELD>`` or
``QUEUE_RATELIMIT__<INTEGRATION>__LIMITS__<LIMIT>__<FIELD>``, values parsed as JSON when
they parse (``2.5``, ``[429, 503]``, ``null``) and kept as strings otherwise.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

from queue_ratelimit.builtins import (
    BUILTIN_HOSTS,
    BUILTIN_INTEGRATIONS,
    BUILTIN_NOTES,
    BUILTIN_SOURCES,
)
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "BUILTIN_HOSTS",
    "BUILTIN_INTEGRATIONS",
    "BUILTIN_NOTES",
    "BUILTIN_SOURCES",
    "CONFIG_PATH_ENV",
    "DEFAULT_TOML_NAME",
    "config_sources",
    "did_you_mean",
    "ENV_PREFIX",
    "Overrides",
    "get_integration",
    "list_integrations",
    "load_configs",
    "load_env",
    "load_json",
    "load_toml",
    "merge_configs",
]

Overrides: TypeAlias = dict[str, dict[str, object]]
"""Per-integration field overrides; ``limits`` maps limit names to field mappings (or None)."""

ENV_PREFIX = "QUEUE_RATELIMIT__"
CONFIG_PATH_ENV = "QUEUE_RATELIMIT_CONFIG"
DEFAULT_TOML_NAME = "queue-ratelimit.toml"

# --- Loaders ---------------------------------------------------------------------------


def load_toml(path: str | os.PathLike[str]) -> Overrides:
    """Read a ``queue-ratelimit.toml`` file: one table per integration.

    Raises:
        ConfigError: the file cannot be read, is not valid TOML, or is not shaped as
            ``{integration: {field: value}}`` (field values are validated by merge_configs).
    """
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        raise _parse_error(path, text, int(match[1]) if match else None, "TOML", exc) from None
    return _normalise_layer(data, str(path))


def load_json(path: str | os.PathLike[str]) -> Overrides:
    """Read a JSON override file: ``{"integration": {"field": value, ...}, ...}``.

    Raises:
        ConfigError: the file cannot be read, is not valid JSON, or is not shaped as
            ``{integration: {field: value}}`` (field values are validated by merge_configs).
    """
    text = _read(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _parse_error(path, text, exc.lineno, "JSON", exc) from None
    return _normalise_layer(data, str(path))


def load_env(environ: Mapping[str, str]) -> Overrides:
    """Collect overrides from ``QUEUE_RATELIMIT__<INTEGRATION>__<FIELD>`` variables.

    Integration, limit and field names are lowercased. Values are parsed as JSON when they
    parse, else kept as strings (so a non-numeric value fails validation with a clear
    ConfigError). Variables without the prefix are ignored.

    Raises:
        ConfigError: a prefixed variable is not shaped like one of the documented forms.
    """
    layer: Overrides = {}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        parts = [part.lower() for part in var[len(ENV_PREFIX) :].split("__")]
        value = _parse_env_value(raw)
        fields: dict[str, object]
        if len(parts) >= 4 and parts[-3] == "limits":
            integration, fields = "__".join(parts[:-3]), {"limits": {parts[-2]: {parts[-1]: value}}}
        else:
            integration, fields = "__".join(parts[:-1]), {parts[-1]: value}
        if not integration or not all(parts):
            raise ConfigError(
                None,
                var,
                raw,
                f"expected {ENV_PREFIX}<INTEGRATION>__<FIELD> "
                f"or {ENV_PREFIX}<INTEGRATION>__LIMITS__<LIMIT>__<FIELD>",
            )
        _merge_fields(layer.setdefault(integration, {}), fields)
    return layer


def merge_configs(
    *override_layers: Mapping[str, Mapping[str, object]],
    base: Mapping[str, IntegrationConfig] = BUILTIN_INTEGRATIONS,
) -> dict[str, IntegrationConfig]:
    """Fold override layers onto ``base``, later layers winning field by field.

    An integration absent from ``base`` is created from IntegrationConfig defaults plus its
    overrides, which must set its ``rate_limit_per_sec`` (the layers together): an override
    of anything else for an unknown name is taken for a misspelling and refused. ``limits``
    merge per limit name and field; a limit set to ``None`` is removed; a new limit must give
    every required LimitConfig field.

    Raises:
        ConfigError: naming the integration, field and value of the first invalid setting.
    """
    combined: Overrides = {}
    for layer in override_layers:
        for name, fields in _normalise_layer(layer, "overrides").items():
            _merge_fields(combined.setdefault(name, {}), fields)
    result = dict(base)
    for name, fields in combined.items():
        settings = base[name].to_dict() if name in base else {}
        _merge_fields(settings, fields)
        result[name] = IntegrationConfig.from_mapping(name, settings)
        if name not in base and "rate_limit_per_sec" not in fields:  # a typo, not a new API
            reason = (
                f"unknown integration{did_you_mean(name, base)}; "
                "a new integration is declared by setting its rate_limit_per_sec"
            )
            raise ConfigError(name, "name", name, reason)
    return result


def load_configs(
    toml_path: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, IntegrationConfig]:
    """Return the effective configs: built-ins < TOML < JSON < environment variables.

    ``environ`` defaults to ``os.environ``, read at call time. When ``QUEUE_RATELIMIT_CONFIG``
    is set it names a ``.toml`` or ``.json`` file used when the matching argument is None.
    Failing both, ``./queue-ratelimit.toml`` is read if it exists.

    Raises:
        ConfigError: a file is unreadable or malformed, or any setting is invalid.
    """
    env = os.environ if environ is None else environ
    toml_path, json_path = _files(toml_path, json_path, env)
    layers = [load_toml(toml_path)] if toml_path is not None else []
    if json_path is not None:
        layers.append(load_json(json_path))
    layers.append(load_env(env))
    return merge_configs(*layers)


def _files(
    toml_path: str | os.PathLike[str] | None,
    json_path: str | os.PathLike[str] | None,
    env: Mapping[str, str],
) -> tuple[str | os.PathLike[str] | None, str | os.PathLike[str] | None]:
    """The TOML and JSON files ``load_configs`` reads (see its docstring)."""
    pointer = env.get(CONFIG_PATH_ENV)
    if pointer:
        suffix = Path(pointer).suffix.lower()
        if suffix not in (".toml", ".json"):
            raise ConfigError(None, CONFIG_PATH_ENV, pointer, "must name a .toml or .json file")
        if suffix == ".toml" and toml_path is None:
            toml_path = pointer
        if suffix == ".json" and json_path is None:
            json_path = pointer
    if toml_path is None and Path(DEFAULT_TOML_NAME).is_file():
        toml_path = DEFAULT_TOML_NAME
    return toml_path, json_path


def config_sources(
    toml_path: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """What ``load_configs`` reads with these arguments, for a log line: ``"built-ins +
    ./queue-ratelimit.toml + 2 QUEUE_RATELIMIT__ variables"``."""
    env = os.environ if environ is None else environ
    files = [str(f) for f in _files(toml_path, json_path, env) if f is not None]
    variables = sum(1 for name in env if name.startswith(ENV_PREFIX))
    parts = ["built-ins", *files]
    if variables:
        parts.append(f"{variables} {ENV_PREFIX} variable{'s' if variables > 1 else ''}")
    return " + ".join(parts)


def list_integrations(configs: Mapping[str, IntegrationConfig] | None = None) -> list[str]:
    """Return the integration names in ``configs`` (the built-ins when None), sorted."""
    return sorted(BUILTIN_INTEGRATIONS if configs is None else configs)


def get_integration(
    name: str, configs: Mapping[str, IntegrationConfig] | None = None
) -> IntegrationConfig:
    """Return the config called ``name`` from ``configs`` (the built-ins when None).

    Raises:
        ConfigError: no integration has that name; the reason lists the known ones.
    """
    known = BUILTIN_INTEGRATIONS if configs is None else configs
    if name not in known:
        hint = did_you_mean(name, known)
        raise ConfigError(
            name, "name", name, f"unknown integration{hint}; known: {', '.join(sorted(known))}"
        )
    return known[name]


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """``" (did you mean 'notion'?)"`` for the closest of ``known`` names, or ``""``."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- Helpers ---------------------------------------------------------------------------


def _read(path: str | os.PathLike[str]) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            None, str(path), str(path), f"cannot read config file: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(None, str(path), str(path), f"not UTF-8 text: {exc}") from None


def _parse_error(
    path: str | os.PathLike[str], text: str, lineno: int | None, kind: str, exc: Exception
) -> ConfigError:
    """Build the ConfigError for a malformed file; its value is the offending line."""
    lines = text.splitlines()
    line = lines[lineno - 1].strip() if lineno and 0 < lineno <= len(lines) else ""
    return ConfigError(None, str(path), line or str(path), f"not valid {kind}: {exc}")


def _parse_env_value(raw: str) -> object:
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return value


def _normalise_layer(data: object, source: str) -> Overrides:
    """Check a layer is ``{name: {field: value}}`` with ``limits`` a table; return a copy."""
    if not isinstance(data, Mapping):
        raise ConfigError(None, source, data, "must map integration names to tables of fields")
    layer: Overrides = {}
    for name, fields in data.items():
        if not isinstance(fields, Mapping):
            raise ConfigError(
                str(name), str(name), fields, f"in {source}: must be a table of fields"
            )
        limits = fields.get("limits", {})
        if not isinstance(limits, Mapping) or not all(
            item is None or isinstance(item, Mapping) for item in limits.values()
        ):
            raise ConfigError(
                str(name),
                "limits",
                limits,
                f"in {source}: must map limit names to tables of fields",
            )
        layer[str(name)] = {}
        _merge_fields(layer[str(name)], fields)
    return layer


def _merge_fields(target: dict[str, object], fields: Mapping[str, object]) -> None:
    """Apply ``fields`` onto ``target``; ``limits`` merges per limit name and field, and
    ``dialect`` per field."""
    for key, value in fields.items():
        previous = target.get("dialect")
        if key == "dialect" and isinstance(value, Mapping) and isinstance(previous, Mapping):
            target[key] = {**previous, **value}
            continue
        if key != "limits" or not isinstance(value, Mapping):
            target[key] = value
            continue
        current = target.get("limits")
        merged: dict[str, Any] = dict(current) if isinstance(current, Mapping) else {}
        for limit_name, limit_fields in value.items():
            previous = merged.get(limit_name)
            if limit_fields is None or not isinstance(previous, Mapping):
                merged[limit_name] = None if limit_fields is None else dict(limit_fields)
            else:
                merged[limit_name] = {**previous, **limit_fields}
        target["limits"] = merged

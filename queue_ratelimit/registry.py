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

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias

from queue_ratelimit.config import IntegrationConfig, LimitConfig
from queue_ratelimit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "BUILTIN_INTEGRATIONS",
    "BUILTIN_NOTES",
    "BUILTIN_SOURCES",
    "CONFIG_PATH_ENV",
    "DEFAULT_TOML_NAME",
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

# --- Built-in defaults -------------------------------------------------------------------
# Conservative starting points, not promises: vendors change limits per plan, per token and
# per endpoint. Start rates sit below max_rate so AIMD can climb. Where a limit is counted
# over a window W, burst_size + max_rate * W stays within the published figure.


@dataclass(frozen=True)
class _Builtin:
    """One built-in integration: its config, where its figures come from, and why."""

    source: str
    """The vendor's published limit in one line, with the URL that documents it."""
    basis: str
    """How the defaults follow from the source (empty when they follow plainly)."""
    config: IntegrationConfig


# fmt: off
_NOTION = _Builtin(
    source="Notion: an average of three requests per second per integration, some bursts "
    "allowed; 429 with Retry-After. https://developers.notion.com/reference/request-limits",
    basis="Starts at 2/s and may climb to the published average of 3/s.",
    config=IntegrationConfig(
        name="notion", rate_limit_per_sec=2.0, burst_size=3.0, increase_factor=0.05,
        min_rate=0.1, max_rate=3.0,
    ),
)

_VANTA = _Builtin(
    source="Vanta: limits are documented per group of endpoints and vary between them; no "
    "figure is encoded here. https://developer.vanta.com (API overview: Rate limits)",
    basis="SAMPLE, a conservative guess: customise to the endpoints and plan you use.",
    config=IntegrationConfig(
        name="vanta", rate_limit_per_sec=0.5, burst_size=1.0, increase_factor=0.05,
        min_rate=0.05, max_rate=1.0,
    ),
)

_FIELDGUIDE = _Builtin(
    source="Fieldguide: we know of no published rate-limit figure.",
    basis="SAMPLE, a conservative guess: customise with the figure agreed with Fieldguide.",
    config=IntegrationConfig(
        name="fieldguide", rate_limit_per_sec=0.5, burst_size=1.0, increase_factor=0.05,
        min_rate=0.05, max_rate=1.0,
    ),
)

_AIRTABLE = _Builtin(
    source="Airtable: 5 requests per second per base; after a 429 the client must wait "
    "30 seconds. https://airtable.com/developers/web/api/rate-limits",
    basis="burst 1 + max 4/s stays within 5 per second. Airtable sends no Retry-After, so "
    "the cooldown comes from cooldown_multiplier x interval: 120 x (1 / 4 req/s) = 30 s at "
    "the highest rate and more below it, clamped to max_backoff = 60 s.",
    config=IntegrationConfig(
        name="airtable", rate_limit_per_sec=2.5, burst_size=1.0, increase_factor=0.05,
        min_rate=0.1, max_rate=4.0, cooldown_multiplier=120.0, max_backoff=60.0,
    ),
)

_ZAPIER = _Builtin(
    source="Zapier catch-hook webhooks: 20,000 requests per 5 minutes per user (~66/s). "
    "https://help.zapier.com (webhook rate limits)",
    basis="Deliberately far below that figure, which is shared by everything that posts to "
    "the same user's hooks.",
    config=IntegrationConfig(
        name="zapier", rate_limit_per_sec=1.0, burst_size=5.0, increase_factor=0.1,
        min_rate=0.1, max_rate=10.0,
    ),
)

_SLACK = _Builtin(
    source="Slack Web API: per method, per workspace, per app tiers: Tier 2 20+/min, Tier 3 "
    "50+/min, Tier 4 100+/min; 429 with Retry-After. https://api.slack.com/apis/rate-limits",
    basis="Starts near Tier 3 (0.8/s) and may climb to Tier 4 (1.6/s). For Tier 2 methods "
    "define a separate integration (e.g. slack_tier2: rate_limit_per_sec 0.25, max_rate 0.33).",
    config=IntegrationConfig(
        name="slack", rate_limit_per_sec=0.8, burst_size=3.0, increase_factor=0.02,
        min_rate=0.1, max_rate=1.6,
    ),
)

_GITHUB = _Builtin(
    source="GitHub REST: 5,000 requests/hour per user token (~1.39/s); secondary limits: at "
    "most 100 concurrent requests, 900 points/min per endpoint, 80 content-creating "
    "requests/min; primary and secondary limits answer 403 or 429. "
    "https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api",
    basis="Without Retry-After GitHub asks for at least a minute: 90 x (1 / 1.38 req/s) = "
    "65 s. A primary-limit reset may be up to an hour away, hence max_backoff = 3600 s. A 403 "
    "is also a permissions error: it counts as a backoff only with rate-limit headers.",
    config=IntegrationConfig(
        name="github", rate_limit_per_sec=1.0, burst_size=10.0, increase_factor=0.01,
        min_rate=0.1, max_rate=1.38, cooldown_multiplier=90.0,
        backoff_status_codes=frozenset({403, 429, 503}), max_backoff=3600.0, max_concurrent=10,
    ),
)

_OPENAI = _Builtin(
    source="OpenAI: per model and per usage tier, counted per minute in requests (RPM) and "
    "tokens (TPM); tier 1 is e.g. 500 RPM and tens of thousands of TPM. "
    "https://platform.openai.com/docs/guides/rate-limits",
    basis="requests: burst 5 + 8/s x 60 s = 485 <= 500 RPM. tokens: sized for 30,000 TPM "
    "(500 tokens/s); burst 6,000 + 400/s x 60 s = 30,000. A single call costing more than the "
    "tokens burst is refused: raise burst_size (and lower max_rate) for long prompts.",
    config=IntegrationConfig(
        name="openai", rate_limit_per_sec=1.0, burst_size=5.0, increase_factor=0.1,
        min_rate=0.1, max_rate=8.0,
        limits=(
            LimitConfig(
                name="tokens", rate_limit_per_sec=200.0, burst_size=6000.0, min_rate=10.0,
                max_rate=400.0, increase_factor=5.0,
            ),
        ),
    ),
)

_STRIPE = _Builtin(
    source="Stripe: 100 operations per second in live mode, 25 per second in sandbox/test "
    "mode. https://docs.stripe.com/rate-limits",
    basis="Capped at the sandbox figure so the same config is safe in test and live mode.",
    config=IntegrationConfig(
        name="stripe", rate_limit_per_sec=10.0, burst_size=2.0, increase_factor=0.2,
        min_rate=0.5, max_rate=25.0,
    ),
)

_HUBSPOT = _Builtin(
    source="HubSpot private apps: 100 requests per 10 s (Free/Starter), 190 per 10 s "
    "(Professional/Enterprise). https://developers.hubspot.com/docs/api/usage-details",
    basis="Free/Starter figure: burst 5 + 9.5/s x 10 s = 100 per 10 s.",
    config=IntegrationConfig(
        name="hubspot", rate_limit_per_sec=5.0, burst_size=5.0, increase_factor=0.1,
        min_rate=0.1, max_rate=9.5,
    ),
)

_BUILTINS = (
    _NOTION, _VANTA, _FIELDGUIDE, _AIRTABLE, _ZAPIER, _SLACK, _GITHUB, _OPENAI, _STRIPE, _HUBSPOT,
)
# fmt: on

BUILTIN_INTEGRATIONS: Mapping[str, IntegrationConfig] = MappingProxyType(
    {builtin.config.name: builtin.config for builtin in _BUILTINS}
)
"""Read-only built-in configurations by name; :data:`BUILTIN_SOURCES` says where each
figure comes from."""

BUILTIN_SOURCES: Mapping[str, str] = MappingProxyType(
    {builtin.config.name: builtin.source for builtin in _BUILTINS}
)
"""Read-only, by integration name: the vendor's published limit behind each built-in, in
one line with the URL that documents it (none where no figure is published)."""

BUILTIN_NOTES: Mapping[str, str] = MappingProxyType(
    {builtin.config.name: builtin.basis for builtin in _BUILTINS}
)
"""Read-only, by integration name: how each built-in's values follow from its source
(an empty string when they follow plainly)."""


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
    overrides. ``limits`` merge per limit name and field; a limit set to ``None`` is removed;
    a new limit must give every required LimitConfig field.

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
    layers = [load_toml(toml_path)] if toml_path is not None else []
    if json_path is not None:
        layers.append(load_json(json_path))
    layers.append(load_env(env))
    return merge_configs(*layers)


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
        raise ConfigError(
            name, "name", name, f"unknown integration; known: {', '.join(sorted(known))}"
        )
    return known[name]


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
    """Apply ``fields`` onto ``target``; ``limits`` merges per limit name and field."""
    for key, value in fields.items():
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

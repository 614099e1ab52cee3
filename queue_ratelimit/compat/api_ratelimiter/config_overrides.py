"""JSON overrides of the per-API configs, by the ``api_ratelimiter`` names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from queue_ratelimit.compat.api_ratelimiter.api_rate_config import ApiRateConfig
from queue_ratelimit.registry import list_integrations, load_json, merge_configs

__all__ = ["list_available_integrations", "load_api_rate_overrides_json", "merged_api_rate_configs"]


def load_api_rate_overrides_json(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The overrides in a JSON file (``{name: {field: value}}``); ``ConfigError`` naming the
    line of a malformed file."""
    return {name: dict(fields) for name, fields in load_json(path).items()}


def merged_api_rate_configs(
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, ApiRateConfig]:
    """The built-in configs with ``overrides`` applied field by field (a new API is declared
    by its ``rate_limit_per_sec``); validated: ``ConfigError`` names a bad field."""
    merged = merge_configs(overrides or {})
    return {name: ApiRateConfig.from_integration(config) for name, config in merged.items()}


def list_available_integrations(configs: Mapping[str, Any] | None = None) -> list[str]:
    """The integrations' names, sorted (the built-ins when ``configs`` is None)."""
    return list_integrations() if configs is None else sorted(configs)

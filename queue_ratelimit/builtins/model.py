"""One built-in integration: its config, where its figures come from, and its API's hosts."""

from __future__ import annotations

from dataclasses import dataclass

from queue_ratelimit.config import IntegrationConfig

__all__ = ["Builtin"]


@dataclass(frozen=True)
class Builtin:
    """One built-in integration.

    Conservative starting points, not promises: vendors change limits per plan, per token and
    per endpoint. Start rates sit below ``max_rate`` so AIMD can climb. Where a limit is
    counted over a window W, ``burst_size + max_rate * W`` stays within the published figure.
    """

    source: str
    """The vendor's published limit in one line, with the URL that documents it."""
    basis: str
    """How the defaults follow from the source (empty when they follow plainly)."""
    config: IntegrationConfig
    hosts: tuple[str, ...] = ()
    """The API's host names: ``BY_HOST`` clients calling them use this integration."""

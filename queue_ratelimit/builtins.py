"""The built-in integrations: conservative defaults for each vendor, with their sources.

``BUILTIN_INTEGRATIONS`` maps names to configs; ``BUILTIN_SOURCES`` gives, per integration,
the vendor's published figure and where it comes from; ``BUILTIN_NOTES`` how the values
follow from it. The documentation's built-in table is generated from these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from queue_ratelimit.config import IntegrationConfig, LimitConfig

__all__ = ["BUILTIN_INTEGRATIONS", "BUILTIN_NOTES", "BUILTIN_SOURCES"]

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

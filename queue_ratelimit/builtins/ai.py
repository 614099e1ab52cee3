"""Built-ins for AI model APIs, limited in requests and in tokens."""

from __future__ import annotations

from queue_ratelimit.builtins.model import Builtin
from queue_ratelimit.config import IntegrationConfig, LimitConfig
from queue_ratelimit.dialect import Dialect

__all__ = ["BUILTINS"]

# fmt: off
OPENAI = Builtin(
    source="OpenAI: per model and per usage tier, counted per minute in requests (RPM) and "
    "tokens (TPM); tier 1 is e.g. 500 RPM and tens of thousands of TPM. "
    "https://platform.openai.com/docs/guides/rate-limits",
    basis="requests: burst 5 + 8/s x 60 s = 485 <= 500 RPM. tokens: sized for 30,000 TPM "
    "(500 tokens/s); burst 6,000 + 400/s x 60 s = 30,000. A single call costing more than the "
    "tokens burst is refused: raise burst_size (and lower max_rate) for long prompts. A 429 "
    "insufficient_quota (the credit spent) is a refusal: a failure the breaker counts, not a "
    "backoff.",
    config=IntegrationConfig(
        name="openai", rate_limit_per_sec=1.0, burst_size=5.0, increase_factor=0.1,
        min_rate=0.1, max_rate=8.0,
        dialect=Dialect(refusal_codes=frozenset({"insufficient_quota"})),
        limits=(
            LimitConfig(
                name="tokens", rate_limit_per_sec=200.0, burst_size=6000.0, min_rate=10.0,
                max_rate=400.0, increase_factor=5.0,
            ),
        ),
    ),
    hosts=("api.openai.com",),
)

MISTRAL = Builtin(
    source="Mistral AI: per organisation, requests per second and tokens per minute and per "
    "month, by tier; the free tier allows 1 request/s and 500,000 tokens/min. "
    "https://docs.mistral.ai/deployment/laplateforme/tier/",
    basis="The free tier: requests burst 1 + 0.5/s (2 in any 2 s, as 1/s allows); tokens "
    "burst 20,000 + 8,000/s x 60 s = 500,000 per minute. The tokens quota is read from "
    "ratelimitbysize-* headers, as the API sends them (seen in clients; its documentation "
    "names none).",
    config=IntegrationConfig(
        name="mistral", rate_limit_per_sec=0.4, burst_size=1.0, increase_factor=0.05,
        min_rate=0.05, max_rate=0.5,
        limits=(
            LimitConfig(
                name="tokens", rate_limit_per_sec=2000.0, burst_size=20000.0, min_rate=100.0,
                max_rate=8000.0, increase_factor=50.0,
            ),
        ),
        dialect=Dialect(
            headers={
                "ratelimitbysize-limit": "tokens.limit",
                "ratelimitbysize-remaining": "tokens.remaining",
                "ratelimitbysize-reset": "tokens.reset",
            },
        ),
    ),
    hosts=("api.mistral.ai",),
)

ANTHROPIC = Builtin(
    source="Anthropic: per organisation and model class, by usage tier; tier 1 allows 50 "
    "requests, 30,000 input tokens and 8,000 output tokens per minute; 429 rate_limit_error "
    "with retry-after and anthropic-ratelimit-* headers; 529 overloaded_error when the API is "
    "overloaded. https://docs.anthropic.com/en/api/rate-limits",
    basis="Tier 1: requests burst 5 + 0.75/s x 60 s = 50 per minute; input_tokens burst "
    "6,000 + 400/s x 60 s = 30,000 per minute. A 529 backs off like a 429.",
    config=IntegrationConfig(
        name="anthropic", rate_limit_per_sec=0.5, burst_size=5.0, increase_factor=0.02,
        min_rate=0.05, max_rate=0.75,
        limits=(
            LimitConfig(
                name="input_tokens", rate_limit_per_sec=200.0, burst_size=6000.0,
                min_rate=10.0, max_rate=400.0, increase_factor=5.0,
            ),
        ),
        dialect=Dialect(backoff_statuses=frozenset({529})),
    ),
    hosts=("api.anthropic.com",),
)

AZURE_OPENAI = Builtin(
    source="Azure OpenAI: per deployment, tokens per minute (TPM) assigned from the region's "
    "quota, and 6 requests per minute per 1,000 TPM, enforced over 1 or 10 second windows; "
    "429 with retry-after-ms. https://learn.microsoft.com/en-us/azure/ai-services/openai/"
    "how-to/quota",
    basis="SAMPLE, a 60,000 TPM deployment (360 RPM, enforced over 1 or 10 s): requests burst 1 "
    "+ 5/s; tokens burst 2,000 + 800/s x 10 s = 10,000 per 10 s (50,000 per minute). The host "
    "is each resource's own, so none is mapped.",
    config=IntegrationConfig(
        name="azure-openai", rate_limit_per_sec=2.0, burst_size=1.0, increase_factor=0.1,
        min_rate=0.1, max_rate=5.0,
        limits=(
            LimitConfig(
                name="tokens", rate_limit_per_sec=300.0, burst_size=2000.0, min_rate=10.0,
                max_rate=800.0, increase_factor=10.0,
            ),
        ),
    ),
)

GOOGLE_GEMINI = Builtin(
    source="Google Gemini API: per project and model, in requests per minute, tokens per "
    "minute and requests per day (e.g. free tier Gemini 2.0 Flash: 15 RPM, 1,000,000 TPM, "
    "1,500 RPD); 429 RESOURCE_EXHAUSTED whose body states a RetryInfo retryDelay. "
    "https://ai.google.dev/gemini-api/docs/rate-limits",
    basis="The free tier's 15 RPM: burst 1 + 0.23/s x 60 s = 14.8 per minute. The daily 1,500 "
    "is not modelled (a spent day answers 429, waited out by its retryDelay); the dialect "
    "reads the body's retryDelay (\"30s\") as the wait.",
    config=IntegrationConfig(
        name="google-gemini", rate_limit_per_sec=0.2, burst_size=1.0, increase_factor=0.01,
        min_rate=0.02, max_rate=0.23,
        dialect=Dialect(wait_fields=("retryDelay",)),
    ),
    hosts=("generativelanguage.googleapis.com",),
)

BUILTINS: tuple[Builtin, ...] = (OPENAI, MISTRAL, ANTHROPIC, AZURE_OPENAI, GOOGLE_GEMINI)
# fmt: on

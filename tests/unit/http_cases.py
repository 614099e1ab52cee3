"""Responses as real APIs document them, and hostile ones, with the signal each must give.

Every documented case cites the page it is modelled on in ``source``; header values are the
documentation's own where it gives them, with times moved relative to a fixed ``now``.
``wait`` is the expected :attr:`RateLimitInfo.wait`, asserted separately from the fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from queue_ratelimit.policy.signals_http import Quota, RateLimitInfo

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z
EPOCH = int(NOW)
GITHUB_CODES = frozenset({403, 429, 503})  # GitHub signals limits with 403 too

NOTION = "https://developers.notion.com/reference/request-limits"
SLACK = "https://api.slack.com/apis/rate-limits"
GITHUB = "https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api"
GITHUB_BEST = (
    "https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api"
)
GITHUB_TROUBLE = "https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api"
OPENAI = "https://platform.openai.com/docs/guides/rate-limits"
AZURE = (
    "https://github.com/Azure/azure-sdk-for-js/blob/main/sdk/core/core-rest-pipeline/"
    "src/retryStrategies/throttlingRetryStrategy.ts"
)
ANTHROPIC = "https://docs.anthropic.com/en/api/rate-limits"
AIRTABLE = "https://airtable.com/developers/web/api/rate-limits"
ZAPIER = "https://docs.zapier.com/platform/build/troubleshoot-throttles"
STRIPE = "https://docs.stripe.com/rate-limits"
STRIPE_ERRORS = "https://docs.stripe.com/error-low-level"
STRIPE_CODES = "https://docs.stripe.com/error-codes#lock-timeout"
SHOPIFY = "https://shopify.dev/docs/api/admin-rest/usage/rate-limits"
DISCORD = "https://discord.com/developers/docs/topics/rate-limits"
SALESFORCE = (
    "https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm"
)
ATLASSIAN = "https://developer.atlassian.com/cloud/jira/platform/rate-limiting/"
GRAPH = "https://learn.microsoft.com/en-us/graph/throttling"
ASYNC_REPLY = "https://learn.microsoft.com/en-us/azure/architecture/patterns/async-request-reply"
HUBSPOT = "https://developers.hubspot.com/docs/api/usage-details"
X_API = "https://developer.x.com/en/docs/x-api/rate-limits"
IETF_06 = "https://datatracker.ietf.org/doc/html/draft-ietf-httpapi-ratelimit-headers-06"
IETF_07 = "https://datatracker.ietf.org/doc/html/draft-ietf-httpapi-ratelimit-headers-07"
IETF_08 = "https://www.ietf.org/archive/id/draft-ietf-httpapi-ratelimit-headers-08.html"
RFC9110 = "https://www.rfc-editor.org/rfc/rfc9110#name-retry-after"
RFC9110_DATES = "https://www.rfc-editor.org/rfc/rfc9110#name-date-time-formats"
HOSTILE = "hostile input: the parser must not raise and must ignore or clamp"

Headers = Mapping[str, str] | Sequence[tuple[str, str]]
Body = bytes | str | Mapping[str, object] | None


@dataclass(frozen=True)
class HttpCase:
    """One response, where it comes from, and the signal and wait it must produce."""

    name: str
    source: str
    status: int
    headers: Headers
    expected: RateLimitInfo
    wait: float | None
    body: Body = None
    now: float = NOW
    backoff_status_codes: frozenset[int] = field(default=frozenset({429, 503}))
    max_backoff: float = 300.0
    integration: str | None = None
    """A built-in whose status codes and dialect parse the case (instead of the fields)."""


def signal(
    backoff: bool = False,
    retry_after: float | None = None,
    limit: int | None = None,
    remaining: int | None = None,
    reset_after: float | None = None,
    quotas: Mapping[str, Quota] | None = None,
    near_limit: bool = False,
    refused: str | None = None,
    contended: str | None = None,
) -> RateLimitInfo:
    """Build an expected signal tersely."""
    return RateLimitInfo(
        backoff,
        retry_after,
        limit,
        remaining,
        reset_after,
        dict(quotas or {}),
        near_limit,
        refused=refused,
        contended=contended,
    )


GITHUB_SECONDARY_BODY = (
    b'{"message": "You have exceeded a secondary rate limit. Please wait a few minutes '
    b'before you try again.", "documentation_url": "https://docs.github.com/rest"}'
)
OPENAI_HEADERS = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}
DISCORD_NOW = 1_470_172_958.553  # X-RateLimit-Reset minus X-RateLimit-Reset-After
HUBSPOT_HEADERS = {
    "X-HubSpot-RateLimit-Daily": "250000",
    "X-HubSpot-RateLimit-Daily-Remaining": "249998",
    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
    "X-HubSpot-RateLimit-Max": "100",
    "X-HubSpot-RateLimit-Remaining": "99",
    "X-HubSpot-RateLimit-Secondly": "10",
    "X-HubSpot-RateLimit-Secondly-Remaining": "9",
}

DOCUMENTED: list[HttpCase] = [
    # --- Notion, Slack, Zapier, Microsoft Graph: Retry-After in seconds --------------------
    HttpCase(
        "notion_429_retry_after",
        NOTION,
        429,
        {"Retry-After": "1", "Content-Type": "application/json"},
        signal(backoff=True, retry_after=1.0),
        wait=1.0,
        body=b'{"object":"error","status":429,"code":"rate_limited","message":"You have '
        b'been rate limited. Please try again in a few minutes."}',
    ),
    HttpCase(
        "slack_429_retry_after",
        SLACK,
        429,
        {"Retry-After": "30"},
        signal(backoff=True, retry_after=30.0),
        wait=30.0,
    ),
    HttpCase(
        "zapier_429_retry_after",
        ZAPIER,
        429,
        {"Retry-After": "60"},
        signal(backoff=True, retry_after=60.0),
        wait=60.0,
    ),
    HttpCase(
        "graph_429_retry_after",
        GRAPH,
        429,
        {"Retry-After": "2", "request-id": "94fb3b52-452a-4535-a601-69e0a90e3aa2"},
        signal(backoff=True, retry_after=2.0),
        wait=2.0,
    ),
    HttpCase(
        "graph_503_retry_after",
        GRAPH,
        503,
        {"Retry-After": "30"},
        signal(backoff=True, retry_after=30.0),
        wait=30.0,
    ),
    HttpCase(
        "async_202_retry_after_is_a_polling_hint",
        ASYNC_REPLY,
        202,
        {"Location": "https://api.example/status/12345", "Retry-After": "5"},
        signal(),
        wait=None,
    ),
    # --- GitHub --------------------------------------------------------------------------
    HttpCase(
        "github_200_primary_headers",
        GITHUB,
        200,
        {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "4999",
            "x-ratelimit-used": "1",
            "x-ratelimit-reset": str(EPOCH + 1200),
            "x-ratelimit-resource": "core",
        },
        signal(limit=5000, remaining=4999, reset_after=1200.0),
        wait=None,
        backoff_status_codes=GITHUB_CODES,
        max_backoff=3600.0,
    ),
    HttpCase(
        "github_403_primary_exhausted",
        GITHUB,
        403,
        {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-used": "5000",
            "x-ratelimit-reset": str(EPOCH + 1200),
        },
        signal(backoff=True, limit=5000, remaining=0, reset_after=1200.0),
        wait=1200.0,
        body=b'{"message": "API rate limit exceeded for user ID 1."}',
        backoff_status_codes=GITHUB_CODES,
        max_backoff=3600.0,
    ),
    HttpCase(
        "github_429_primary_exhausted",
        GITHUB,
        429,
        {
            "x-ratelimit-limit": "60",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(EPOCH + 42),
        },
        signal(backoff=True, limit=60, remaining=0, reset_after=42.0),
        wait=42.0,
        backoff_status_codes=GITHUB_CODES,
    ),
    HttpCase(
        "github_403_exhausted_but_403_not_a_backoff_code",
        GITHUB,
        403,
        {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(EPOCH + 90),
        },
        signal(limit=5000, remaining=0, reset_after=90.0),
        wait=90.0,
    ),
    HttpCase(
        "github_403_secondary_retry_after",
        GITHUB_BEST,
        403,
        {"retry-after": "60", "x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4000"},
        signal(backoff=True, retry_after=60.0, limit=5000, remaining=4000),
        wait=60.0,
        body=GITHUB_SECONDARY_BODY,
        backoff_status_codes=GITHUB_CODES,
    ),
    HttpCase(
        "github_429_secondary_retry_after",
        GITHUB_BEST,
        429,
        {"retry-after": "60", "x-ratelimit-remaining": "4000"},
        signal(backoff=True, retry_after=60.0, remaining=4000),
        wait=60.0,
        body=GITHUB_SECONDARY_BODY,
        backoff_status_codes=GITHUB_CODES,
    ),
    HttpCase(
        "github_403_secondary_wording_only",
        GITHUB,
        403,
        {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4990"},
        signal(backoff=True, limit=5000, remaining=4990),
        wait=None,
        body=GITHUB_SECONDARY_BODY,
        backoff_status_codes=GITHUB_CODES,
    ),
    HttpCase(
        "github_403_permission_error_is_not_a_backoff",
        GITHUB_TROUBLE,
        403,
        {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4990"},
        signal(limit=5000, remaining=4990),
        wait=None,
        body=b'{"message": "Resource not accessible by integration"}',
        backoff_status_codes=GITHUB_CODES,
    ),
    HttpCase(
        "github_used_gives_remaining",
        GITHUB,
        200,
        {"x-ratelimit-limit": "60", "x-ratelimit-used": "60", "x-ratelimit-reset": str(EPOCH + 5)},
        signal(limit=60, remaining=0, reset_after=5.0),
        wait=5.0,
    ),
    # --- OpenAI, Azure OpenAI -----------------------------------------------------------
    HttpCase(
        "openai_429_quota_headers",
        OPENAI,
        429,
        OPENAI_HEADERS,
        signal(
            backoff=True,
            limit=60,
            remaining=59,
            reset_after=1.0,
            quotas={"requests": Quota(60, 59, 1.0), "tokens": Quota(150000, 149984, 360.0)},
        ),
        wait=None,
        max_backoff=600.0,
    ),
    HttpCase(  # the credit is spent: no wait mends it (a failure, which the breaker counts)
        "openai_429_insufficient_quota_is_a_refusal",
        "https://platform.openai.com/docs/guides/error-codes",
        429,
        {},
        signal(refused="insufficient_quota"),
        wait=None,
        body=b'{"error": {"message": "You exceeded your current quota, please check your plan'
        b' and billing details.", "type": "insufficient_quota", "param": null,'
        b' "code": "insufficient_quota"}}',
        integration="openai",
    ),
    HttpCase(  # the same status, a throttle: a backoff
        "openai_429_rate_limit_exceeded_is_a_backoff",
        "https://platform.openai.com/docs/guides/error-codes",
        429,
        {},
        signal(backoff=True),
        wait=None,
        body=b'{"error": {"message": "Rate limit reached for requests", "type": "requests",'
        b' "param": null, "code": "rate_limit_exceeded"}}',
        integration="openai",
    ),
    HttpCase(
        "openai_200_tokens_spent_waits_for_tokens",
        OPENAI,
        200,
        {**OPENAI_HEADERS, "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"},
        signal(
            limit=60,
            remaining=59,
            reset_after=1.0,
            quotas={"requests": Quota(60, 59, 1.0), "tokens": Quota(150000, 0, 0.02)},
        ),
        wait=0.02,
    ),
    HttpCase(
        "openai_compound_durations",
        OPENAI,
        200,
        {"x-ratelimit-reset-requests": "1m30.5s", "x-ratelimit-reset-tokens": "2h3m"},
        signal(
            reset_after=90.5,
            quotas={"requests": Quota(None, None, 90.5), "tokens": Quota(None, None, 7380.0)},
        ),
        wait=None,
        max_backoff=10_000.0,
    ),
    HttpCase(
        "azure_openai_retry_after_ms_preferred",
        AZURE,
        429,
        {"retry-after-ms": "1500", "retry-after": "2"},
        signal(backoff=True, retry_after=1.5),
        wait=1.5,
    ),
    HttpCase(
        "azure_x_ms_retry_after_ms",
        AZURE,
        503,
        {"x-ms-retry-after-ms": "250"},
        signal(backoff=True, retry_after=0.25),
        wait=0.25,
    ),
    # --- Anthropic ----------------------------------------------------------------------
    HttpCase(
        "anthropic_429_retry_after_and_quotas",
        ANTHROPIC,
        429,
        {
            "retry-after": "30",
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2024-05-01T12:00:30Z",
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "12000",
            "anthropic-ratelimit-tokens-reset": "2024-05-01T12:00:20Z",
            "anthropic-ratelimit-input-tokens-limit": "30000",
            "anthropic-ratelimit-input-tokens-remaining": "10000",
            "anthropic-ratelimit-input-tokens-reset": "2024-05-01T12:00:20Z",
            "anthropic-ratelimit-output-tokens-limit": "10000",
            "anthropic-ratelimit-output-tokens-remaining": "2000",
            "anthropic-ratelimit-output-tokens-reset": "2024-05-01T12:00:10Z",
        },
        signal(
            backoff=True,
            retry_after=30.0,
            limit=50,
            remaining=0,
            reset_after=30.0,
            quotas={
                "requests": Quota(50, 0, 30.0),
                "tokens": Quota(40000, 12000, 20.0),
                "input_tokens": Quota(30000, 10000, 20.0),
                "output_tokens": Quota(10000, 2000, 10.0),
            },
        ),
        wait=30.0,
    ),
    HttpCase(  # fractions of 9 and 2 digits (fromisoformat takes 3 or 6 before Python 3.11)
        "anthropic_200_resets_with_nanoseconds_and_centiseconds",
        ANTHROPIC,
        200,
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2024-05-01T12:00:30.123456789Z",
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "12000",
            "anthropic-ratelimit-tokens-reset": "2024-05-01T12:00:20.25Z",
        },
        signal(
            limit=50,
            remaining=49,
            reset_after=30.123456,
            quotas={"requests": Quota(50, 49, 30.123456), "tokens": Quota(40000, 12000, 20.25)},
        ),
        wait=None,
    ),
    HttpCase(
        "anthropic_200_input_tokens_spent",
        ANTHROPIC,
        200,
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2024-05-01T12:00:01Z",
            "anthropic-ratelimit-input-tokens-limit": "30000",
            "anthropic-ratelimit-input-tokens-remaining": "0",
            "anthropic-ratelimit-input-tokens-reset": "2024-05-01T12:00:05Z",
        },
        signal(
            limit=50,
            remaining=49,
            reset_after=1.0,
            quotas={"requests": Quota(50, 49, 1.0), "input_tokens": Quota(30000, 0, 5.0)},
        ),
        wait=5.0,
    ),
    HttpCase(
        "anthropic_tokens_only_headline_is_most_restrictive",
        ANTHROPIC,
        200,
        {
            "anthropic-ratelimit-input-tokens-limit": "30000",
            "anthropic-ratelimit-input-tokens-remaining": "27000",
            "anthropic-ratelimit-output-tokens-limit": "10000",
            "anthropic-ratelimit-output-tokens-remaining": "1000",
        },
        signal(
            limit=10000,
            remaining=1000,
            quotas={
                "input_tokens": Quota(30000, 27000, None),
                "output_tokens": Quota(10000, 1000, None),
            },
        ),
        wait=None,
    ),
    # --- Airtable, Stripe: a 429 with no timing ------------------------------------------
    HttpCase(
        "airtable_429_fixed_penalty_has_no_header",
        AIRTABLE,
        429,
        {"Content-Type": "application/json"},
        signal(backoff=True),
        wait=None,
        body=b'{"errors": [{"error": "RATE_LIMIT_REACHED"}]}',
    ),
    HttpCase(
        "stripe_429_should_retry",
        STRIPE_ERRORS,
        429,
        {"Stripe-Should-Retry": "true", "Request-Id": "req_123"},
        signal(backoff=True),
        wait=None,
        body={"error": {"type": "invalid_request_error", "code": "rate_limit"}},
    ),
    HttpCase(  # the account's rate: a backoff, whichever limiter said it
        "stripe_429_global_rate_is_a_backoff",
        STRIPE,
        429,
        {"Stripe-Rate-Limited-Reason": "global-rate", "Request-Id": "req_124"},
        signal(backoff=True),
        wait=None,
        body={"error": {"type": "invalid_request_error", "code": "rate_limit"}},
        integration="stripe",
    ),
    HttpCase(  # one endpoint's concurrency: a backoff too
        "stripe_429_endpoint_concurrency_is_a_backoff",
        STRIPE,
        429,
        {"Stripe-Rate-Limited-Reason": "endpoint-concurrency"},
        signal(backoff=True),
        wait=None,
        body={"error": {"type": "invalid_request_error", "code": "rate_limit"}},
        integration="stripe",
    ),
    HttpCase(  # one object's own limit (a PaymentIntent's updates an hour): not the rate
        "stripe_429_resource_specific_is_contention",
        STRIPE,
        429,
        {"Stripe-Rate-Limited-Reason": "resource-specific", "Stripe-Should-Retry": "true"},
        signal(contended="resource-specific"),
        wait=None,
        body={"error": {"type": "invalid_request_error", "code": "rate_limit"}},
        integration="stripe",
    ),
    HttpCase(  # another request holds the object's lock: retry it, the rate is fine
        "stripe_429_lock_timeout_is_contention",
        STRIPE_CODES,
        429,
        {"Request-Id": "req_125", "Stripe-Should-Retry": "true"},
        signal(contended="lock_timeout"),
        wait=None,
        body={
            "error": {
                "type": "invalid_request_error",
                "code": "lock_timeout",
                "message": "This object cannot be accessed right now because another API "
                "request or Stripe process is currently accessing it.",
            }
        },
        integration="stripe",
    ),
    HttpCase(
        "stripe_200_says_nothing",
        STRIPE,
        200,
        {"Request-Id": "req_456", "Content-Type": "application/json"},
        signal(),
        wait=None,
    ),
    # --- Shopify ------------------------------------------------------------------------
    HttpCase(
        "shopify_200_call_limit",
        SHOPIFY,
        200,
        {"X-Shopify-Shop-Api-Call-Limit": "32/40"},
        signal(limit=40, remaining=8),
        wait=None,
    ),
    HttpCase(
        "shopify_429_decimal_retry_after",
        SHOPIFY,
        429,
        {"X-Shopify-Shop-Api-Call-Limit": "40/40", "Retry-After": "2.0"},
        signal(backoff=True, retry_after=2.0, limit=40, remaining=0),
        wait=2.0,
    ),
    # --- Discord ------------------------------------------------------------------------
    HttpCase(
        "discord_429_docs_example",
        DISCORD,
        429,
        {
            "Retry-After": "65",
            "X-RateLimit-Limit": "10",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "1470173023.123",
            "X-RateLimit-Reset-After": "64.57",
            "X-RateLimit-Bucket": "abcd1234",
            "X-RateLimit-Scope": "user",
        },
        signal(backoff=True, retry_after=65.0, limit=10, remaining=0, reset_after=64.57),
        wait=65.0,
        body=b'{"message": "You are being rate limited.", "retry_after": 64.57, "global": false}',
        now=DISCORD_NOW,
    ),
    HttpCase(
        "discord_429_body_only",
        DISCORD,
        429,
        {},
        signal(backoff=True, retry_after=1.5),
        wait=1.5,
        body=b'{"retry_after": 1.5, "global": false}',
    ),
    HttpCase(
        "discord_429_decoded_body",
        DISCORD,
        429,
        {"X-RateLimit-Global": "true"},
        signal(backoff=True, retry_after=1.5),
        wait=1.5,
        body={"message": "You are being rate limited.", "retry_after": 1.5, "global": True},
    ),
    HttpCase(
        "discord_429_legacy_milliseconds_body_is_clamped",
        DISCORD,
        429,
        {},
        signal(backoff=True, retry_after=300.0),
        wait=300.0,
        body='{"retry_after": 6457, "global": false}',
    ),
    HttpCase(
        "discord_200_reset_after_beats_reset",
        DISCORD,
        200,
        {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(EPOCH + 2),
            "X-RateLimit-Reset-After": "0.5",
        },
        signal(limit=5, remaining=0, reset_after=0.5),
        wait=0.5,
    ),
    # --- Salesforce, HubSpot, Atlassian, X ----------------------------------------------
    HttpCase(
        "salesforce_api_usage",
        SALESFORCE,
        200,
        {"Sforce-Limit-Info": "api-usage=25/5000"},
        signal(limit=5000, remaining=4975),
        wait=None,
    ),
    HttpCase(
        "salesforce_per_app_usage",
        SALESFORCE,
        200,
        {"Sforce-Limit-Info": "api-usage=25/5000; per-app-api-usage=17/250(appName=sample-app)"},
        signal(limit=5000, remaining=4975, quotas={"per_app": Quota(250, 233, None)}),
        wait=None,
    ),
    HttpCase(
        "hubspot_200_all_windows",
        HUBSPOT,
        200,
        HUBSPOT_HEADERS,
        signal(
            limit=100,
            remaining=99,
            reset_after=10.0,
            quotas={"secondly": Quota(10, 9, 1.0), "daily": Quota(250000, 249998, None)},
        ),
        wait=None,
    ),
    HttpCase(
        "hubspot_429_interval_spent",
        HUBSPOT,
        429,
        {**HUBSPOT_HEADERS, "X-HubSpot-RateLimit-Remaining": "0"},
        signal(
            backoff=True,
            limit=100,
            remaining=0,
            reset_after=10.0,
            quotas={"secondly": Quota(10, 9, 1.0), "daily": Quota(250000, 249998, None)},
        ),
        wait=10.0,
    ),
    HttpCase(  # the daily limit is spent until midnight in the account's time zone
        "hubspot_429_daily_limit_is_a_refusal",
        HUBSPOT,
        429,
        {**HUBSPOT_HEADERS, "X-HubSpot-RateLimit-Daily-Remaining": "0"},
        signal(
            limit=100,
            remaining=99,
            reset_after=10.0,
            quotas={"secondly": Quota(10, 9, 1.0), "daily": Quota(250000, 0, None)},
            refused="DAILY",
        ),
        wait=None,
        body=b'{"status": "error", "message": "You have reached your daily limit.",'
        b' "errorType": "RATE_LIMIT", "policyName": "DAILY", "correlationId": "c0ffee"}',
        integration="hubspot",
    ),
    HttpCase(
        "atlassian_429_iso_minute_reset",
        ATLASSIAN,
        429,
        {
            "Retry-After": "60",
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "2024-05-01T12:01Z",
            "X-RateLimit-NearLimit": "true",
        },
        signal(
            backoff=True,
            retry_after=60.0,
            limit=100,
            remaining=0,
            reset_after=60.0,
            near_limit=True,
        ),
        wait=60.0,
    ),
    HttpCase(
        "atlassian_200_near_limit",
        ATLASSIAN,
        200,
        {
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Remaining": "15",
            "X-RateLimit-NearLimit": "true",
        },
        signal(limit=100, remaining=15, near_limit=True),
        wait=None,
    ),
    HttpCase(
        "atlassian_503_retry_after",
        ATLASSIAN,
        503,
        {"Retry-After": "10"},
        signal(backoff=True, retry_after=10.0),
        wait=10.0,
    ),
    HttpCase(
        "x_429_epoch_reset",
        X_API,
        429,
        {
            "x-rate-limit-limit": "900",
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(EPOCH + 600),
        },
        signal(backoff=True, limit=900, remaining=0, reset_after=600.0),
        wait=600.0,
        max_backoff=900.0,
    ),
    HttpCase(
        "x_200_epoch_reset_clamped",
        X_API,
        200,
        {
            "x-rate-limit-limit": "900",
            "x-rate-limit-remaining": "847",
            "x-rate-limit-reset": str(EPOCH + 600),
        },
        signal(limit=900, remaining=847, reset_after=300.0),
        wait=None,
    ),
    # --- IETF drafts and RFC 9110 -------------------------------------------------------
    HttpCase(
        "ietf_06_separate_fields",
        IETF_06,
        200,
        {"RateLimit-Limit": "10", "RateLimit-Remaining": "1", "RateLimit-Reset": "7"},
        signal(limit=10, remaining=1, reset_after=7.0),
        wait=None,
    ),
    HttpCase(
        "ietf_07_dictionary_field",
        IETF_07,
        200,
        {"RateLimit": "limit=100, remaining=50, reset=5", "RateLimit-Policy": "10;w=1, 100;w=3600"},
        signal(limit=100, remaining=50, reset_after=5.0),
        wait=None,
    ),
    HttpCase(
        "ietf_08_structured_fields",
        IETF_08,
        200,
        {"RateLimit-Policy": '"default";q=100;w=10', "RateLimit": '"default";r=50;t=30'},
        signal(limit=100, remaining=50, reset_after=30.0, quotas={"default": Quota(100, 50, 30.0)}),
        wait=None,
    ),
    HttpCase(
        "ietf_08_two_policies_headline_is_most_restrictive",
        IETF_08,
        429,
        {
            "RateLimit-Policy": '"burst";q=100;w=60,"daily";q=1000;w=86400',
            "RateLimit": '"burst";r=0;t=30, "daily";r=900;t=3600',
        },
        signal(
            backoff=True,
            limit=100,
            remaining=0,
            reset_after=30.0,
            quotas={"burst": Quota(100, 0, 30.0), "daily": Quota(1000, 900, 300.0)},
        ),
        wait=30.0,
    ),
    HttpCase(
        "rfc9110_retry_after_imf_fixdate",
        RFC9110,
        503,
        {"Retry-After": "Wed, 01 May 2024 12:02:00 GMT"},
        signal(backoff=True, retry_after=120.0),
        wait=120.0,
    ),
    HttpCase(
        "rfc9110_retry_after_rfc850_date",
        RFC9110_DATES,
        429,
        {"Retry-After": "Wednesday, 01-May-24 12:01:00 GMT"},
        signal(backoff=True, retry_after=60.0),
        wait=60.0,
    ),
    HttpCase(
        "rfc9110_retry_after_asctime_date",
        RFC9110_DATES,
        429,
        {"Retry-After": "Wed May  1 12:00:45 2024"},
        signal(backoff=True, retry_after=45.0),
        wait=45.0,
    ),
]

HOSTILE_CASES: list[HttpCase] = [
    HttpCase(  # words are a wait, never evidence: a locked account is no rate limit
        "words_never_make_a_backoff",
        HOSTILE,
        403,
        {},
        signal(),
        wait=None,
        body=b'{"error": {"message": "Too many failed sign-ins: try again in 30 minutes"}}',
        backoff_status_codes=frozenset({403, 429, 503}),
    ),
    HttpCase(
        "words_name_a_time_already_past",
        HOSTILE,
        429,
        {},
        signal(backoff=True, retry_after=0.0),
        wait=0.0,
        body=b"Slow down. Retry after 2024-05-01T11:59:00Z.",
    ),
    HttpCase(
        "a_header_wins_over_words",
        HOSTILE,
        429,
        {"Retry-After": "5"},
        signal(backoff=True, retry_after=5.0),
        wait=5.0,
        body=b'{"message": "Please retry after 60 seconds"}',
    ),
    HttpCase(
        "words_of_a_go_duration",
        HOSTILE,
        429,
        {},
        signal(backoff=True, retry_after=1.8),
        wait=1.8,
        body=(
            b'{"error": {"message": "Rate limit reached for gpt-4o on tokens per min (TPM):'
            b" Limit 30000, Used 29000, Requested 2000. Please try again in 1.8s. Visit"
            b' https://platform.openai.com/account/rate-limits to learn more.",'
            b' "type": "tokens", "code": "rate_limit_exceeded"}}'
        ),
    ),
    HttpCase(
        "words_without_a_number_say_nothing",
        HOSTILE,
        429,
        {},
        signal(backoff=True),
        wait=None,
        body=b"Please retry after a while, or try again in a few minutes.",
    ),
    HttpCase(
        "garbage_retry_after",
        HOSTILE,
        429,
        {"Retry-After": "soon", "X-RateLimit-Remaining": "lots"},
        signal(backoff=True),
        wait=None,
    ),
    HttpCase(
        "negative_values_ignored",
        HOSTILE,
        429,
        {"Retry-After": "-5", "X-RateLimit-Remaining": "-1", "X-RateLimit-Reset": "-30"},
        signal(backoff=True),
        wait=None,
    ),
    HttpCase(
        "absurd_retry_after_clamped",
        HOSTILE,
        429,
        {"Retry-After": "99999999999"},
        signal(backoff=True, retry_after=300.0),
        wait=300.0,
    ),
    HttpCase(
        "http_date_in_the_past_is_zero",
        RFC9110,
        429,
        {"Retry-After": "Fri, 31 Dec 1999 23:59:59 GMT"},
        signal(backoff=True, retry_after=0.0),
        wait=0.0,
    ),
    HttpCase(
        "epoch_reset_in_the_past_is_zero",
        HOSTILE,
        200,
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(EPOCH - 100)},
        signal(remaining=0, reset_after=0.0),
        wait=0.0,
    ),
    HttpCase(
        "epoch_milliseconds_reset",
        HOSTILE,
        200,
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(EPOCH * 1000 + 45_000)},
        signal(remaining=0, reset_after=45.0),
        wait=45.0,
    ),
    HttpCase(
        "retry_after_and_reset_disagree",
        HOSTILE,
        429,
        {"Retry-After": "30", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(EPOCH + 120)},
        signal(backoff=True, retry_after=30.0, remaining=0, reset_after=120.0),
        wait=30.0,
    ),
    HttpCase(
        "odd_case_header_names",
        HOSTILE,
        429,
        {"rEtRy-AfTeR": "7", "X-RATELIMIT-REMAINING": "0", "x-RateLimit-LIMIT": "10"},
        signal(backoff=True, retry_after=7.0, limit=10, remaining=0),
        wait=7.0,
    ),
    HttpCase(
        "empty_values",
        HOSTILE,
        429,
        {"Retry-After": "", "X-RateLimit-Limit": "", "X-RateLimit-Reset": "   ", "RateLimit": ""},
        signal(backoff=True),
        wait=None,
    ),
    HttpCase(
        "unicode_junk",
        HOSTILE,
        429,
        {
            "Retry-After": "\u0663\u0660",  # Arabic-Indic "30": float() would accept it
            "X-RateLimit-Limit": "\uff11\uff10\uff10",  # fullwidth "100"
            "X-RateLimit-Remaining": "\U0001f525",
            "X-RateLimit-Reset": "\u202e0321\u202c",
        },
        signal(backoff=True),
        wait=None,
    ),
    HttpCase(
        "one_megabyte_values_ignored",
        HOSTILE,
        429,
        {"Retry-After": "9" * 1_000_000, "X-RateLimit-Remaining": "1" * 1_000_000},
        signal(backoff=True),
        wait=None,
    ),
    HttpCase(
        "nan_and_inf_ignored",
        HOSTILE,
        429,
        {
            "Retry-After": "NaN",
            "retry-after-ms": "inf",
            "X-RateLimit-Reset": "-inf",
            "X-RateLimit-Limit": "1e3",
        },
        signal(backoff=True),
        wait=None,
        body=b'{"retry_after": NaN}',
    ),
    HttpCase(
        "infinite_body_retry_after_clamped",
        HOSTILE,
        429,
        {},
        signal(backoff=True, retry_after=300.0),
        wait=300.0,
        body=b'{"retry_after": 1e999}',
    ),
    HttpCase(
        "repeated_header_first_valid_wins",
        HOSTILE,
        429,
        [("Retry-After", "junk"), ("retry-after", "12"), ("RETRY-AFTER", "99")],
        signal(backoff=True, retry_after=12.0),
        wait=12.0,
    ),
    HttpCase(
        "joined_repeated_header",
        HOSTILE,
        200,
        {"X-RateLimit-Remaining": "5, 5", "X-RateLimit-Limit": "10, 10"},
        signal(limit=10, remaining=5),
        wait=None,
    ),
    HttpCase(
        "status_not_in_backoff_codes",
        HOSTILE,
        503,
        {"Retry-After": "30"},
        signal(),
        wait=None,
        backoff_status_codes=frozenset({429}),
    ),
    HttpCase(
        "large_body_not_parsed",
        HOSTILE,
        429,
        {},
        signal(backoff=True),
        wait=None,
        body=b'{"retry_after": 5, "pad": "' + b"x" * 70_000 + b'"}',
    ),
    HttpCase(
        "binary_body_ignored",
        HOSTILE,
        429,
        {},
        signal(backoff=True),
        wait=None,
        body=b"\xff\xfe\x00retry_after\x00\x80\x81{",
    ),
    HttpCase(
        "deeply_nested_body_ignored",
        HOSTILE,
        429,
        {},
        signal(backoff=True),
        wait=None,
        body='{"retry_after": ' + "[" * 50_000,
    ),
    HttpCase(
        "body_retry_after_wrong_types",
        HOSTILE,
        429,
        {},
        signal(backoff=True),
        wait=None,
        body={"retry_after": True, "global": "yes"},
    ),
    HttpCase(
        "broken_structured_field",
        HOSTILE,
        200,
        {"RateLimit": '"unterminated;r=5;t=', "RateLimit-Policy": ';;;,,,"";q=-1;w=x'},
        signal(),
        wait=None,
    ),
    HttpCase(
        "bad_durations_and_timestamps",
        HOSTILE,
        200,
        {
            "x-ratelimit-reset-requests": "6m0",
            "x-ratelimit-reset-tokens": "1d",
            "anthropic-ratelimit-requests-reset": "2024-13-45T99:99:99Z",
            "anthropic-ratelimit-tokens-reset": "9999-12-31T23:59:59-23:59",
        },
        signal(reset_after=300.0, quotas={"tokens": Quota(None, None, 300.0)}),
        wait=None,
    ),
    HttpCase(
        "bad_http_dates",
        HOSTILE,
        429,
        [
            ("Retry-After", "Wed, 32 May 2024 12:02:00 GMT"),
            ("Retry-After", "Wed, 01 May 99999 12:02:00 GMT"),
            ("Retry-After", "Wed, 01 May 2024 12:02:00 +9999"),
        ],
        signal(backoff=True),
        wait=None,
    ),
]

CASES: list[HttpCase] = DOCUMENTED + HOSTILE_CASES

"""Built-ins for developer platforms: code hosting, issue trackers, infrastructure."""

from __future__ import annotations

from queue_ratelimit.builtins.model import Builtin
from queue_ratelimit.config import IntegrationConfig, LimitConfig
from queue_ratelimit.dialect import Dialect
from queue_ratelimit.endpoints import Endpoint

__all__ = ["BUILTINS"]

# fmt: off
GITHUB = Builtin(
    source="GitHub REST: 5,000 requests/hour per user token (~1.39/s); secondary limits: at "
    "most 100 concurrent requests, 900 points/min per endpoint, 80 content-creating "
    "requests/min; primary and secondary limits answer 403 or 429. "
    "https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api",
    basis="Without Retry-After (and with remaining quota) GitHub asks to wait at least a "
    "minute: the dialect's default wait. A primary-limit reset may be up to an hour away, "
    "hence max_backoff = 3600 s. A 403 is also a permissions error: it counts as a backoff "
    "only with rate-limit headers or wording. Quota headers count only for the core resource "
    "(x-ratelimit-resource): another resource's remaining (audit_log, code_scanning_upload, "
    "...) is not the core limit's.",
    config=IntegrationConfig(
        name="github", rate_limit_per_sec=1.0, burst_size=10.0, increase_factor=0.01,
        min_rate=0.1, max_rate=1.38,
        backoff_status_codes=frozenset({403, 429, 503}), max_backoff=3600.0, max_concurrent=10,
        dialect=Dialect(
            default_wait=60.0, resource_header="x-ratelimit-resource",
            resources=frozenset({"core"}),
        ),
        endpoints=(
            Endpoint("github-code-search", paths=("/search/code",)),
            Endpoint("github-search", paths=("/search/",)),
            Endpoint("github-graphql", paths=("/graphql",)),
        ),
    ),
    hosts=("api.github.com",),
)

GITHUB_SEARCH = Builtin(
    source="GitHub REST search: 30 requests per minute per user for the search endpoints "
    "(10 for code search), apart from the 5,000 an hour of the rest; 403 or 429 with "
    "x-ratelimit-* headers (resource search). "
    "https://docs.github.com/en/rest/search/search#rate-limit",
    basis="0.4/s climbing to 0.5/s (30 a minute), in bursts of 5: github's endpoints send "
    "/search/ here (but /search/code: github-code-search), so a search backlog neither "
    "spends nor waits for the core limit.",
    config=IntegrationConfig(
        name="github-search", rate_limit_per_sec=0.4, burst_size=5.0, increase_factor=0.01,
        min_rate=0.1, max_rate=0.5,
        backoff_status_codes=frozenset({403, 429, 503}), max_backoff=3600.0, max_concurrent=10,
        dialect=Dialect(
            default_wait=60.0, resource_header="x-ratelimit-resource",
            resources=frozenset({"search"}),
        ),
    ),
)

GITHUB_CODE_SEARCH = Builtin(
    source="GitHub REST code search: 10 requests per minute per user (resource code_search), "
    "apart from the other searches' 30 and the core limit. "
    "https://docs.github.com/en/rest/search/search#rate-limit",
    basis="burst 5 + 0.083/s x 60 s = 10 per minute: github's endpoints send /search/code "
    "here, so its quota neither holds nor hides the other searches'.",
    config=IntegrationConfig(
        name="github-code-search", rate_limit_per_sec=0.08, burst_size=5.0,
        increase_factor=0.01, min_rate=0.02, max_rate=0.083,
        backoff_status_codes=frozenset({403, 429, 503}), max_backoff=3600.0, max_concurrent=10,
        dialect=Dialect(
            default_wait=60.0, resource_header="x-ratelimit-resource",
            resources=frozenset({"code_search"}),
        ),
    ),
)

CLOUDFLARE = Builtin(
    source="Cloudflare API: 1,200 requests per 5 minutes per user (all tokens and keys "
    "together); past it every call is blocked for the next five minutes; RateLimit and "
    "RateLimit-Policy fields, retry-after on a 429. "
    "https://developers.cloudflare.com/fundamentals/api/reference/limits/",
    basis="burst 10 + 3.9/s x 300 s = 1,180 per 5 minutes. A 429 without retry-after waits "
    "the documented 5 minutes.",
    config=IntegrationConfig(
        name="cloudflare", rate_limit_per_sec=2.0, burst_size=10.0, increase_factor=0.1,
        min_rate=0.1, max_rate=3.9, dialect=Dialect(default_wait=300.0),
    ),
    hosts=("api.cloudflare.com",),
)

AWS = Builtin(
    source="AWS APIs: quotas per service and API (e.g. S3: 3,500 writes and 5,500 reads per "
    "second per prefix); throttling answers 400 with a Throttling code (JSON __type or XML "
    "<Code>), 429, or S3's 503 SlowDown. "
    "https://docs.aws.amazon.com/general/latest/gr/api-retries.html",
    basis="SAMPLE, a conservative start: configure per service. The throttling codes are the "
    "AWS SDKs' (botocore), in the body or x-amzn-ErrorType; a 400 is a backoff only with one "
    "of them; x-amz-retry-after is read in milliseconds, a body's retryAfterSeconds in "
    "seconds.",
    config=IntegrationConfig(
        name="aws", rate_limit_per_sec=5.0, burst_size=5.0, increase_factor=0.5,
        min_rate=0.1, max_rate=50.0, backoff_status_codes=frozenset({400, 429, 503}),
        dialect=Dialect(
            throttle_codes=frozenset({
                "Throttling", "ThrottlingException", "ThrottledException",
                "RequestThrottledException", "TooManyRequestsException",
                "ProvisionedThroughputExceededException", "TransactionInProgressException",
                "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException",
                "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
                "EC2ThrottledException",
            }),
            headers={"x-amz-retry-after": "retry_after_ms", "x-amzn-errortype": "code"},
            wait_fields=("retryAfterSeconds",),
        ),
    ),
)

_ATLASSIAN_SOURCE = (
    "Atlassian {product} Cloud: an hourly points quota per app (65,000 points/hour in the "
    "global pool; per-tenant pools up to 500,000), and per-tenant bursts per endpoint and "
    "method (GET and POST 100/s, PUT and DELETE 50/s); 429 with Retry-After, X-RateLimit-*, "
    "X-RateLimit-NearLimit and RateLimit-Reason. {url}"
)
_ATLASSIAN_BASIS = (
    "Within the global pool at a point a call: burst 10 + 17/s x 3,600 s = 61,210 per hour "
    "(<= 65,000), well below the burst limits; the hourly quota is fed forward from the "
    "headers. The documented client backs off 5 s when a 429 states no wait: the dialect's "
    "default wait. Sites live on each tenant's own host, so none is mapped."
)

JIRA = Builtin(
    source=_ATLASSIAN_SOURCE.format(
        product="Jira", url="https://developer.atlassian.com/cloud/jira/platform/rate-limiting/"
    ),
    basis=_ATLASSIAN_BASIS,
    config=IntegrationConfig(
        name="jira", rate_limit_per_sec=5.0, burst_size=10.0, increase_factor=0.5,
        min_rate=0.1, max_rate=17.0, max_backoff=3600.0, dialect=Dialect(default_wait=5.0),
    ),
)

CONFLUENCE = Builtin(
    source=_ATLASSIAN_SOURCE.format(
        product="Confluence", url="https://developer.atlassian.com/cloud/confluence/rate-limiting/"
    ),
    basis=_ATLASSIAN_BASIS,
    config=IntegrationConfig(
        name="confluence", rate_limit_per_sec=5.0, burst_size=10.0, increase_factor=0.5,
        min_rate=0.1, max_rate=17.0, max_backoff=3600.0, dialect=Dialect(default_wait=5.0),
    ),
)

GITHUB_GRAPHQL = Builtin(
    source="GitHub GraphQL API: 5,000 points per hour per user; secondary limits of 100 "
    "concurrent requests and 2,000 points per minute; a spent limit answers 200 (or 403) "
    "with errors[].type RATE_LIMITED and x-ratelimit-* headers (resource graphql). "
    "https://docs.github.com/en/graphql/overview/rate-limits-and-query-limits-for-the-graphql-api",
    basis="As the REST built-in, in points (1.38/s at most; a call is charged 1 unless "
    "estimated, then corrected by its rateLimit { cost remaining limit resetAt } when the "
    "query asks for it). The dialect reads RATE_LIMITED (and the RATE_LIMIT type with code "
    "graphql_rate_limit GitHub also sends) from a 200's body, takes a 403's secondary-limit "
    "wording as a backoff, and waits the documented minute when nothing says how long. It "
    "shares api.github.com with REST, so no host is mapped.",
    config=IntegrationConfig(
        name="github-graphql", rate_limit_per_sec=1.0, burst_size=10.0, increase_factor=0.01,
        min_rate=0.1, max_rate=1.38,
        backoff_status_codes=frozenset({403, 429, 503}), max_backoff=3600.0, max_concurrent=10,
        dialect=Dialect(
            body_statuses=frozenset({200}),
            throttle_codes=frozenset({"RATE_LIMITED", "RATE_LIMIT", "graphql_rate_limit"}),
            wording=True, default_wait=60.0, cost_quota="requests",
            resource_header="x-ratelimit-resource", resources=frozenset({"graphql"}),
            cost_fields={
                "actual": "data.rateLimit.cost", "remaining": "data.rateLimit.remaining",
                "limit": "data.rateLimit.limit", "reset": "data.rateLimit.resetAt",
            },
        ),
    ),
)

GITLAB = Builtin(
    source="GitLab.com: 2,000 API requests per minute per authenticated user (500 per IP "
    "unauthenticated; some endpoints lower); 429 with Retry-After and RateLimit-* headers "
    "(RateLimit-Reset in epoch seconds). https://docs.gitlab.com/user/gitlab_com/rate_limits/",
    basis="burst 10 + 25/s x 60 s = 1,510 per minute, within 2,000.",
    config=IntegrationConfig(
        name="gitlab", rate_limit_per_sec=5.0, burst_size=10.0, increase_factor=0.5,
        min_rate=0.1, max_rate=25.0,
    ),
    hosts=("gitlab.com",),
)

LINEAR = Builtin(
    source="Linear GraphQL API: leaky buckets per user, 2,500 requests and 3,000,000 "
    "complexity points per hour for an API key (5,000 requests for OAuth apps); a throttled "
    "call answers 400 with errors[].extensions.code RATELIMITED; X-RateLimit-Requests-* and "
    "X-RateLimit-Complexity-* headers (resets in epoch ms). "
    "https://linear.app/developers/rate-limiting",
    basis="The API-key figures: requests burst 10 + 0.65/s x 3,600 s = 2,350 per hour; "
    "complexity burst 100,000 + 800/s x 3,600 s = 2,980,000 per hour, each call charged what "
    "X-Complexity says it cost (estimate it with cost={\"complexity\": n} to pace ahead).",
    config=IntegrationConfig(
        name="linear", rate_limit_per_sec=0.5, burst_size=10.0, increase_factor=0.01,
        min_rate=0.05, max_rate=0.65, max_backoff=3600.0,
        limits=(
            LimitConfig(
                name="complexity", rate_limit_per_sec=400.0, burst_size=100000.0,
                min_rate=10.0, max_rate=800.0, increase_factor=10.0,
            ),
        ),
        dialect=Dialect(
            body_statuses=frozenset({400}), throttle_codes=frozenset({"RATELIMITED"}),
            headers={"x-complexity": "complexity.cost"},
        ),
    ),
    hosts=("api.linear.app",),
)

BUILTINS: tuple[Builtin, ...] = (
    GITHUB, GITHUB_SEARCH, GITHUB_CODE_SEARCH, GITHUB_GRAPHQL, GITLAB, LINEAR, JIRA, CONFLUENCE,
    CLOUDFLARE, AWS,
)
# fmt: on

"""Built-ins for workspace and productivity APIs: documents, bases, tasks, files."""

from __future__ import annotations

from queue_ratelimit.builtins.model import Builtin
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.dialect import Dialect

__all__ = ["BUILTINS"]

# fmt: off
NOTION = Builtin(
    source="Notion: an average of three requests per second per integration, some bursts "
    "allowed; 429 with Retry-After. https://developers.notion.com/reference/request-limits",
    basis="Starts at 2/s and may climb to the published average of 3/s.",
    config=IntegrationConfig(
        name="notion", rate_limit_per_sec=2.0, burst_size=3.0, increase_factor=0.05,
        min_rate=0.1, max_rate=3.0,
    ),
    hosts=("api.notion.com",),
)

VANTA = Builtin(
    source="Vanta: limits are documented per group of endpoints and vary between them; no "
    "figure is encoded here. https://developer.vanta.com (API overview: Rate limits)",
    basis="SAMPLE, a conservative guess: customise to the endpoints and plan you use.",
    config=IntegrationConfig(
        name="vanta", rate_limit_per_sec=0.5, burst_size=1.0, increase_factor=0.05,
        min_rate=0.05, max_rate=1.0,
    ),
    hosts=("api.vanta.com",),
)

FIELDGUIDE = Builtin(
    source="Fieldguide: we know of no published rate-limit figure.",
    basis="SAMPLE, a conservative guess: customise with the figure agreed with Fieldguide.",
    config=IntegrationConfig(
        name="fieldguide", rate_limit_per_sec=0.5, burst_size=1.0, increase_factor=0.05,
        min_rate=0.05, max_rate=1.0,
    ),
)

AIRTABLE = Builtin(
    source="Airtable: 5 requests per second per base; after a 429 the client must wait "
    "30 seconds. https://airtable.com/developers/web/api/rate-limits",
    basis="burst 1 + max 4/s stays within 5 per second. Airtable sends no Retry-After: the "
    "dialect's default wait is the documented 30 s.",
    config=IntegrationConfig(
        name="airtable", rate_limit_per_sec=2.5, burst_size=1.0, increase_factor=0.05,
        min_rate=0.1, max_rate=4.0, max_backoff=60.0,
        dialect=Dialect(default_wait=30.0),
    ),
    hosts=("api.airtable.com",),
)

ZAPIER = Builtin(
    source="Zapier catch-hook webhooks: 20,000 requests per 5 minutes per user (~66/s). "
    "https://help.zapier.com (webhook rate limits)",
    basis="Deliberately far below that figure, which is shared by everything that posts to "
    "the same user's hooks.",
    config=IntegrationConfig(
        name="zapier", rate_limit_per_sec=1.0, burst_size=5.0, increase_factor=0.1,
        min_rate=0.1, max_rate=10.0,
    ),
    hosts=("hooks.zapier.com",),
)

ASANA = Builtin(
    source="Asana: 150 requests per minute per token on free domains, 1,500 on paid ones; "
    "search 60 per minute; at most 50 concurrent reads and 15 concurrent writes; 429 with "
    "Retry-After. https://developers.asana.com/docs/rate-limits",
    basis="Free-domain figure: burst 5 + 2.4/s x 60 s = 149 per minute; the write "
    "concurrency (15) as max_concurrent.",
    config=IntegrationConfig(
        name="asana", rate_limit_per_sec=1.0, burst_size=5.0, increase_factor=0.05,
        min_rate=0.1, max_rate=2.4, max_concurrent=15,
    ),
    hosts=("app.asana.com",),
)

CLICKUP = Builtin(
    source="ClickUp: 100 requests per minute per token on Free Forever, Unlimited and "
    "Business plans, 1,000 on Business Plus, 10,000 on Enterprise; 429 with X-RateLimit-* "
    "headers. https://developer.clickup.com/docs/rate-limits",
    basis="The 100/min plans: burst 2 + 1.6/s x 60 s = 98 per minute.",
    config=IntegrationConfig(
        name="clickup", rate_limit_per_sec=0.8, burst_size=2.0, increase_factor=0.05,
        min_rate=0.1, max_rate=1.6,
    ),
    hosts=("api.clickup.com",),
)

DROPBOX = Builtin(
    source="Dropbox: limits per access token (per user, or per team for Business "
    "endpoints), no figure published; 429 with Retry-After and an error whose reason is "
    "too_many_requests or too_many_write_operations (namespace lock contention). "
    "https://developers.dropbox.com/dbx-performance-guide",
    basis="SAMPLE, a conservative guess. The dialect reads the body's reason and retry_after, "
    "also on a 409 that reports too_many_write_operations.",
    config=IntegrationConfig(
        name="dropbox", rate_limit_per_sec=2.0, burst_size=2.0, increase_factor=0.1,
        min_rate=0.1, max_rate=10.0,
        dialect=Dialect(
            body_statuses=frozenset({409}),
            throttle_codes=frozenset({"too_many_requests", "too_many_write_operations"}),
        ),
    ),
    hosts=("api.dropboxapi.com", "content.dropboxapi.com"),
)

MICROSOFT_GRAPH = Builtin(
    source="Microsoft Graph: limits per service; Outlook allows 10,000 requests per 10 "
    "minutes and 4 concurrent requests per app and mailbox; 429 (or 503/504) with "
    "Retry-After, exponential backoff when none. https://learn.microsoft.com/graph/throttling",
    basis="The Outlook figures: at most 15/s (10,000 / 600 s = 16.7/s) and 4 concurrent. A "
    "504 is a backoff only with a Retry-After or throttling words.",
    config=IntegrationConfig(
        name="microsoft-graph", rate_limit_per_sec=4.0, burst_size=4.0, increase_factor=0.2,
        min_rate=0.1, max_rate=15.0, max_concurrent=4,
        backoff_status_codes=frozenset({429, 503, 504}),
        dialect=Dialect(throttle_codes=frozenset({"TooManyRequests", "activityLimitReached"})),
    ),
    hosts=("graph.microsoft.com",),
)

MONDAY = Builtin(
    source="monday.com GraphQL API: complexity budgets per minute (app tokens 5M points for "
    "reads and 5M for writes), 1,000 to 5,000 requests per minute and 1,000 to 25,000 calls "
    "per day by plan; every rate-limit error states retry_in_seconds. "
    "https://developer.monday.com/api-reference/docs/rate-limits",
    basis="The smallest plans' 1,000 requests per minute: burst 5 + 16/s x 60 s = 965 (the "
    "daily call limit is not modelled: a spent day answers DAILY_LIMIT_EXCEEDED and its "
    "retry_in_seconds). The dialect reads the errors of a 200 or 429 body "
    "(COMPLEXITY_BUDGET_EXHAUSTED and the others) and their retry_in_seconds.",
    config=IntegrationConfig(
        name="monday", rate_limit_per_sec=2.0, burst_size=5.0, increase_factor=0.2,
        min_rate=0.1, max_rate=16.0, max_backoff=3600.0,
        dialect=Dialect(
            body_statuses=frozenset({200}),
            throttle_codes=frozenset({
                "COMPLEXITY_BUDGET_EXHAUSTED", "ComplexityException", "DAILY_LIMIT_EXCEEDED",
                "IP_RATE_LIMIT_EXCEEDED", "FIELD_LIMIT_EXCEEDED", "maxConcurrencyExceeded",
                "RATE_LIMIT_EXCEEDED",
            }),
            wait_fields=("retry_in_seconds",),
        ),
    ),
    hosts=("api.monday.com",),
)

BUILTINS: tuple[Builtin, ...] = (
    NOTION, VANTA, FIELDGUIDE, AIRTABLE, ZAPIER, ASANA, CLICKUP, DROPBOX, MICROSOFT_GRAPH,
    MONDAY,
)
# fmt: on

"""Built-ins for payments, commerce and CRM APIs."""

from __future__ import annotations

from queue_ratelimit.builtins.model import Builtin
from queue_ratelimit.config import IntegrationConfig, LimitConfig
from queue_ratelimit.dialect import Dialect
from queue_ratelimit.endpoints import Endpoint

__all__ = ["BUILTINS"]

# fmt: off
STRIPE_SOURCE = (
    "Stripe: 100 operations per second in live mode, 25 per second in sandbox/test mode, "
    "and by default 25 per second per endpoint; the Search API 20 reads per second, the "
    "Files API (files.stripe.com) 20 reads and 20 writes per second. "
    "https://docs.stripe.com/rate-limits; a 429 says which limiter in "
    "Stripe-Rate-Limited-Reason (global-rate, endpoint-rate, global-concurrency, "
    "endpoint-concurrency, resource-specific: one object's own limit), and a 429 with the "
    "code lock_timeout is another request holding the object. "
    "https://docs.stripe.com/error-codes#lock-timeout"
)
# one object busy or at its own limit is no backoff of the account's rate: retried alone
STRIPE_DIALECT = Dialect(
    headers={"Stripe-Rate-Limited-Reason": "code"},
    contention_codes=frozenset({"lock_timeout", "resource-specific"}),
)
STRIPE_SEARCHES = tuple(
    f"/v1/{kind}/search"
    for kind in (
        "charges", "customers", "invoices", "payment_intents", "prices", "products",
        "subscriptions",
    )
)

STRIPE = Builtin(
    source=STRIPE_SOURCE,
    basis="Within the sandbox figure so the same config is safe in test and live mode: burst 2 "
    "+ 23/s x 1 s = 25. Its endpoints send the Search API's paths to stripe-search, whose "
    "calls (and stripe-files') count apart: in sandbox mode, with all three busy, the "
    "account's 25 a second can be passed, and its 429s slow each down.",
    config=IntegrationConfig(
        name="stripe", rate_limit_per_sec=10.0, burst_size=2.0, increase_factor=0.2,
        min_rate=0.5, max_rate=23.0, dialect=STRIPE_DIALECT,
        endpoints=(Endpoint("stripe-search", paths=STRIPE_SEARCHES),),
    ),
    hosts=("api.stripe.com",),
)

STRIPE_SEARCH = Builtin(
    source=STRIPE_SOURCE,
    basis="The Search API's 20 reads a second: burst 2 + 18/s x 1 s = 20.",
    config=IntegrationConfig(
        name="stripe-search", rate_limit_per_sec=8.0, burst_size=2.0, increase_factor=0.2,
        min_rate=0.5, max_rate=18.0, dialect=STRIPE_DIALECT,
    ),
)

STRIPE_FILES = Builtin(
    source=STRIPE_SOURCE,
    basis="The Files API's 20 a second, reads and writes together: burst 2 + 18/s x 1 s = 20.",
    config=IntegrationConfig(
        name="stripe-files", rate_limit_per_sec=8.0, burst_size=2.0, increase_factor=0.2,
        min_rate=0.5, max_rate=18.0, dialect=STRIPE_DIALECT,
    ),
    hosts=("files.stripe.com",),
)

HUBSPOT = Builtin(
    source="HubSpot private apps: 100 requests per 10 s (Free/Starter), 190 per 10 s "
    "(Professional/Enterprise). https://developers.hubspot.com/docs/api/usage-details",
    basis="Free/Starter figure: burst 5 + 9.5/s x 10 s = 100 per 10 s. A spent daily limit "
    "(429 with policyName DAILY, until midnight in the account's time zone) is a refusal: a "
    "failure the breaker counts, not a backoff retried all day.",
    config=IntegrationConfig(
        name="hubspot", rate_limit_per_sec=5.0, burst_size=5.0, increase_factor=0.1,
        min_rate=0.1, max_rate=9.5, dialect=Dialect(refusal_codes=frozenset({"DAILY"})),
    ),
    hosts=("api.hubapi.com",),
)

SALESFORCE = Builtin(
    source="Salesforce: a rolling 24-hour allocation of API requests per org (by edition and "
    "licences), reported as Sforce-Limit-Info: api-usage=used/limit; 25 concurrent "
    "long-running requests (5 on Developer orgs); over the limit, 403 with errorCode "
    "REQUEST_LIMIT_EXCEEDED. https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/"
    "api_rest/headers_api_usage.htm",
    basis="No per-second figure is published: a moderate start with the concurrency limit. A "
    "403 is a backoff only with REQUEST_LIMIT_EXCEEDED (no wait is stated or documented: the "
    "cooldown is the limiter's own).",
    config=IntegrationConfig(
        name="salesforce", rate_limit_per_sec=2.0, burst_size=5.0, increase_factor=0.1,
        min_rate=0.1, max_rate=20.0, max_concurrent=25,
        backoff_status_codes=frozenset({403, 429, 503}),
        dialect=Dialect(throttle_codes=frozenset({"REQUEST_LIMIT_EXCEEDED"})),
    ),
)

ATTIO = Builtin(
    source="Attio: 100 read requests and 25 write requests per second across the API (list "
    "queries also have score-based limits); 429 rate_limit_exceeded with Retry-After as an "
    "HTTP date. https://docs.attio.com/rest-api/guides/rate-limiting",
    basis="Within the write figure, so reads and writes alike stay inside it: burst 5 + 20/s "
    "x 1 s = 25.",
    config=IntegrationConfig(
        name="attio", rate_limit_per_sec=5.0, burst_size=5.0, increase_factor=0.5,
        min_rate=0.1, max_rate=20.0,
    ),
    hosts=("api.attio.com",),
)

SHOPIFY = Builtin(
    source="Shopify REST Admin API: a leaky bucket of 40 requests per app and store, leaking "
    "2 per second (Plus: 400 and 20/s); 429 with Retry-After, X-Shopify-Shop-Api-Call-Limit "
    "used/limit on every answer. https://shopify.dev/docs/api/admin-rest/usage/rate-limits",
    basis="The standard plan: at most 2/s, burst 20 (half the bucket, for calls in flight); "
    "the documented 1 s wait when a 429 states none.",
    config=IntegrationConfig(
        name="shopify", rate_limit_per_sec=1.0, burst_size=20.0, increase_factor=0.05,
        min_rate=0.1, max_rate=2.0, dialect=Dialect(default_wait=1.0),
    ),
)

SHOPIFY_GRAPHQL = Builtin(
    source="Shopify GraphQL Admin API: a calculated cost per query, from a leaky bucket per "
    "app and store restoring 100 points per second (Advanced 200, Plus 1,000), 1,000 points "
    "at most per query; a throttled query answers 200 with errors[].extensions.code "
    "THROTTLED. https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits",
    basis="points: burst 1,000 (the largest query) + at most 50/s, half the standard restore "
    "rate: the cost of a query is known only after it. Pass the estimated cost as "
    "{\"points\": n}; each answer's extensions.cost corrects it with the actual cost, and its "
    "throttleStatus feeds the budget forward (what remains, and the time to restore what is "
    "spent).",
    config=IntegrationConfig(
        name="shopify-graphql", rate_limit_per_sec=5.0, burst_size=5.0, increase_factor=0.5,
        min_rate=0.1, max_rate=50.0,
        limits=(
            LimitConfig(
                name="points", rate_limit_per_sec=25.0, burst_size=1000.0, min_rate=1.0,
                max_rate=50.0, increase_factor=1.0,
            ),
        ),
        dialect=Dialect(
            body_statuses=frozenset({200}),
            throttle_codes=frozenset({"THROTTLED"}),
            cost_fields={
                "requested": "extensions.cost.requestedQueryCost",
                "actual": "extensions.cost.actualQueryCost",
                "limit": "extensions.cost.throttleStatus.maximumAvailable",
                "remaining": "extensions.cost.throttleStatus.currentlyAvailable",
                "restore_rate": "extensions.cost.throttleStatus.restoreRate",
            },
        ),
    ),
)

BUILTINS: tuple[Builtin, ...] = (
    STRIPE, STRIPE_SEARCH, STRIPE_FILES, SHOPIFY, SHOPIFY_GRAPHQL, HUBSPOT, SALESFORCE, ATTIO,
)
# fmt: on

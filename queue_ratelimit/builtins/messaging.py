"""Built-ins for messaging, email and support APIs."""

from __future__ import annotations

from queue_ratelimit.builtins.model import Builtin
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.dialect import Dialect
from queue_ratelimit.endpoints import Endpoint

__all__ = ["BUILTINS"]

# fmt: off
SLACK_SOURCE = (
    "Slack Web API: each method is limited per workspace per app by its tier: Tier 1 1+/min, "
    "Tier 2 20+/min, Tier 3 50+/min, Tier 4 100+/min, chat.postMessage about 1 a second per "
    "channel; 429 with Retry-After (body error ratelimited). "
    "https://docs.slack.dev/apis/web-api/rate-limits"
)
# Tier of each method, from Slack's method pages (docs.slack.dev/reference/methods/...);
# a method not listed here is Tier 3, the tier of most, and goes to ``slack`` itself. The
# paths are prefixes: conversations.list covers conversations.listConnectInvites (Tier 2).
SLACK_TIER_1 = ("apps.connections.open", "rtm.connect")
SLACK_TIER_2 = (
    "conversations.list", "conversations.create", "users.list", "usergroups.list",
    "usergroups.users.list", "pins.add", "files.upload", "search.messages", "search.all",
    "search.files", "emoji.list", "bookmarks.add", "reminders.add", "reminders.list",
)
SLACK_TIER_4 = (
    "chat.postEphemeral", "conversations.members", "users.info", "users.profile.get",
    "files.getUploadURLExternal", "files.completeUploadExternal", "files.info", "views.open",
    "views.publish", "views.update", "views.push", "auth.test", "chat.getPermalink",
)
SLACK_POST = ("chat.postMessage",)


def _slack_paths(methods: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"/api/{method}" for method in methods)


def _slack(name: str, rate: float, burst: float, most: float, increase: float) -> IntegrationConfig:
    """A Slack tier's config: its 429's body names the throttle (``ratelimited``; chat's
    ``rate_limited``), read on a 200 too, should one ever carry it."""
    return IntegrationConfig(
        name=name, rate_limit_per_sec=rate, burst_size=burst, increase_factor=increase,
        min_rate=min(0.1, rate), max_rate=most,
        dialect=Dialect(
            body_statuses=frozenset({200}),
            throttle_codes=frozenset({"ratelimited", "rate_limited"}),
        ),
    )


SLACK = Builtin(
    source=SLACK_SOURCE,
    basis="Tier 3, for every method not routed elsewhere: burst 3 + 0.78/s x 60 s = 49.8 per "
    "minute. Its endpoints send the Tier 1, 2 and 4 methods and chat.postMessage to "
    "slack-tier1, slack-tier2, slack-tier4 and slack-post-message (the HTTP clients pick "
    "the method from the path). The methods of a tier share one level, though Slack counts "
    "each method apart: conservative when one app calls several methods of a tier.",
    config=_slack("slack", 0.6, 3.0, 0.78, 0.02).replace(
        endpoints=(
            Endpoint("slack-post-message", paths=_slack_paths(SLACK_POST)),
            Endpoint("slack-tier1", paths=_slack_paths(SLACK_TIER_1)),
            Endpoint("slack-tier2", paths=_slack_paths(SLACK_TIER_2)),
            Endpoint("slack-tier4", paths=_slack_paths(SLACK_TIER_4)),
        ),
    ),
    hosts=("slack.com",),
)

SLACK_TIER1 = Builtin(
    source=SLACK_SOURCE,
    basis="Tier 1 (apps.connections.open, rtm.connect): one call a minute, and the small "
    "burst Slack tolerates: at most 2 in a minute (burst 1 + 1/60 s x 60 s).",
    config=_slack("slack-tier1", 0.01, 1.0, 1 / 60, 0.001),
)

SLACK_TIER2 = Builtin(
    source=SLACK_SOURCE,
    basis="Tier 2 (conversations.list, users.list, search.messages, ...): burst 2 + 0.3/s x "
    "60 s = 20 per minute.",
    config=_slack("slack-tier2", 0.25, 2.0, 0.3, 0.01),
)

SLACK_TIER4 = Builtin(
    source=SLACK_SOURCE,
    basis="Tier 4 (users.info, conversations.members, views.*, ...), and auth.test and "
    "chat.getPermalink (hundreds a minute): burst 5 + 1.58/s x 60 s = 99.8 per minute.",
    config=_slack("slack-tier4", 1.2, 5.0, 1.58, 0.05),
)

SLACK_POST_MESSAGE = Builtin(
    source=SLACK_SOURCE,
    basis="About one message a second per channel, with the short bursts Slack tolerates "
    "(burst 2 + 1/s: at most 3 in a second, 62 in a minute; a workspace-wide limit of "
    "several hundred a minute besides): make the channel (with the workspace, for an app in "
    "several) the tenant; without one, every channel shares the one second.",
    config=_slack("slack-post-message", 0.8, 2.0, 1.0, 0.05),
)

ZENDESK = Builtin(
    source="Zendesk Support API: requests per minute per account by plan: Team 200, Growth "
    "and Professional 400, Enterprise 700, Enterprise Plus (or High Volume) 2,500; 429 with "
    "Retry-After. https://developer.zendesk.com/api-reference/introduction/rate-limits/",
    basis="The Team plan: burst 5 + 3.2/s x 60 s = 197 per minute. X-Rate-Limit and "
    "ratelimit-* are read; the host is each account's subdomain, so none is mapped.",
    config=IntegrationConfig(
        name="zendesk", rate_limit_per_sec=1.5, burst_size=5.0, increase_factor=0.05,
        min_rate=0.1, max_rate=3.2,
    ),
)

INTERCOM = Builtin(
    source="Intercom: 10,000 API calls per minute per app (25,000 per workspace for private "
    "apps), spread over 10-second windows; 429 with X-RateLimit-* for the 10 s window. "
    "https://developers.intercom.com/docs/references/rest-api/errors/rate-limiting",
    basis="About 60% of the per-app figure (166/s): at most 100/s, burst 20.",
    config=IntegrationConfig(
        name="intercom", rate_limit_per_sec=10.0, burst_size=20.0, increase_factor=1.0,
        min_rate=0.5, max_rate=100.0,
    ),
    hosts=("api.intercom.io",),
)

SENDGRID = Builtin(
    source="Twilio SendGrid v3: a fixed number of requests per refresh period per endpoint, "
    "reported in X-RateLimit-Limit/-Remaining/-Reset; no table is published (600/min on "
    "some endpoints). https://www.twilio.com/docs/sendgrid/api-reference/"
    "how-to-use-the-sendgrid-v3-api/rate-limits",
    basis="SAMPLE, a cautious start: the published quota headers steer it.",
    config=IntegrationConfig(
        name="sendgrid", rate_limit_per_sec=2.0, burst_size=5.0, increase_factor=0.1,
        min_rate=0.1, max_rate=10.0,
    ),
    hosts=("api.sendgrid.com",),
)

TWILIO = Builtin(
    source="Twilio REST API: limited by concurrent requests per account; over it, 429 with "
    "error 20429 (Too Many Requests); no figure published. "
    "https://www.twilio.com/docs/api/errors/20429",
    basis="SAMPLE: at most 25 requests in flight, which a single account usually has.",
    config=IntegrationConfig(
        name="twilio", rate_limit_per_sec=5.0, burst_size=5.0, increase_factor=0.5,
        min_rate=0.1, max_rate=50.0, max_concurrent=25,
    ),
    hosts=("api.twilio.com",),
)

MAILCHIMP = Builtin(
    source="Mailchimp Marketing API: at most 10 simultaneous connections per user account; "
    "429 TooManyRequests beyond. https://mailchimp.com/developer/marketing/docs/fundamentals/",
    basis="The connection limit as max_concurrent; no volume limit is published. The host is "
    "each account's data centre (us1.api.mailchimp.com ...), so none is mapped.",
    config=IntegrationConfig(
        name="mailchimp", rate_limit_per_sec=5.0, burst_size=5.0, increase_factor=0.5,
        min_rate=0.1, max_rate=50.0, max_concurrent=10,
    ),
)

RESEND = Builtin(
    source="Resend: 2 requests per second per team by default, shared by its API keys; 429 "
    "rate_limit_exceeded with ratelimit-* and retry-after (daily and monthly email quotas "
    "apart). https://resend.com/docs/api-reference/rate-limit",
    basis="Within the default 2/s: burst 1 + 1/s x 1 s = 2. A spent daily or monthly email "
    "quota (429 daily_quota_exceeded, monthly_quota_exceeded) is a refusal: a failure the "
    "breaker counts, not a backoff.",
    config=IntegrationConfig(
        name="resend", rate_limit_per_sec=0.5, burst_size=1.0, increase_factor=0.05,
        min_rate=0.1, max_rate=1.0,
        dialect=Dialect(
            refusal_codes=frozenset({"daily_quota_exceeded", "monthly_quota_exceeded"})
        ),
    ),
    hosts=("api.resend.com",),
)

DISCORD = Builtin(
    source="Discord: per-route buckets (X-RateLimit-Bucket) and a global limit of 50 "
    "requests per second per bot; 429 with Retry-After and a JSON body whose retry_after is "
    "precise, global true for the global limit. "
    "https://discord.com/developers/docs/topics/rate-limits",
    basis="At most 40/s, below the global limit. The X-RateLimit-* headers describe one "
    "route's bucket (X-RateLimit-Bucket), not the bot's limit: they publish no quota here "
    "(a route's 5 per 5 s would hold every route); a 429 waits its retry_after.",
    config=IntegrationConfig(
        name="discord", rate_limit_per_sec=5.0, burst_size=5.0, increase_factor=0.5,
        min_rate=0.1, max_rate=40.0, dialect=Dialect(resource_header="X-RateLimit-Bucket"),
    ),
    hosts=("discord.com",),
)

X = Builtin(
    source="X API v2: per endpoint, per app and per user, mostly 15-minute windows (e.g. "
    "GET /2/tweets/:id 450 per app); 429 with x-rate-limit-limit/-remaining/-reset (epoch "
    "seconds). https://docs.x.com/x-api/fundamentals/rate-limits",
    basis="450 per 15 minutes: burst 10 + 0.45/s x 900 s = 415. The docs' own client waits "
    "at least 60 s when nothing says how long: the dialect's default wait.",
    config=IntegrationConfig(
        name="x", rate_limit_per_sec=0.2, burst_size=10.0, increase_factor=0.01,
        min_rate=0.01, max_rate=0.45, max_backoff=900.0, dialect=Dialect(default_wait=60.0),
    ),
    hosts=("api.x.com", "api.twitter.com"),
)

BUILTINS: tuple[Builtin, ...] = (
    SLACK, SLACK_TIER1, SLACK_TIER2, SLACK_TIER4, SLACK_POST_MESSAGE, DISCORD, X, ZENDESK,
    INTERCOM, SENDGRID, TWILIO, MAILCHIMP, RESEND,
)
# fmt: on

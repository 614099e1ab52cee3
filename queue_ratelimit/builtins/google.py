"""Built-ins for Google's APIs: one way of stating limits, several APIs and quotas.

Google's APIs answer a rate limit with 429, or with 403 and a reason (``rateLimitExceeded``,
``userRateLimitExceeded``) in ``error.errors[]``; any other 403 is a permission error. A
spent daily quota (``quotaExceeded``, ``dailyLimitExceeded``) is a refusal where the API
states it so: waiting minutes does not mend it. Several APIs share the host
``www.googleapis.com``: the ``googleapis`` integration holds it and sends each API's paths
to that API's integration.
"""

from __future__ import annotations

from queue_ratelimit.builtins.model import Builtin
from queue_ratelimit.config import IntegrationConfig
from queue_ratelimit.dialect import Dialect
from queue_ratelimit.endpoints import Endpoint

__all__ = ["BUILTINS"]

_RATE_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded"})
_BACKOFF = frozenset({403, 429, 503})

GOOGLE = Dialect(body_statuses=frozenset({403}), throttle_codes=_RATE_REASONS)
"""A 403 is a backoff only with a rate-limit reason."""

_SPENT = frozenset({"quotaExceeded", "dailyLimitExceeded"})

GOOGLE_DAILY = Dialect(
    body_statuses=frozenset({403}),
    throttle_codes=_RATE_REASONS,
    refusal_codes=_SPENT,
    app_refusals=frozenset({"dailyLimitExceeded"}),
)
"""And a spent quota refuses the call: a failure the breaker counts. ``quotaExceeded`` is
a user's (Calendar's usage limits: the tenant's alone), ``dailyLimitExceeded`` the
project's."""

YOUTUBE_DAILY = Dialect(
    body_statuses=frozenset({403}),
    throttle_codes=_RATE_REASONS,
    refusal_codes=_SPENT,
    app_refusals=_SPENT,
)
"""YouTube's quotas are the project's: a spent one refuses every tenant's call."""

# fmt: off
GOOGLE_DRIVE = Builtin(
    source="Google Drive API: 12,000 queries per 60 s per project and per user (quota units "
    "from May 2026); rate limits answer 403 or 429 with reason userRateLimitExceeded or "
    "rateLimitExceeded. https://developers.google.com/workspace/drive/api/guides/limits",
    basis="Half the per-user figure (200/s) at most. A 403 is a backoff only with one of "
    "those reasons (or rate-limit wording): any other 403 is a permission error.",
    config=IntegrationConfig(
        name="google-drive", rate_limit_per_sec=5.0, burst_size=5.0, increase_factor=0.5,
        min_rate=0.1, max_rate=100.0, backoff_status_codes=frozenset({403, 429, 503}),
        dialect=GOOGLE,
    ),
)

GOOGLE_SHEETS = Builtin(
    source="Google Sheets API: per minute, 300 read and 300 write requests per project and 60 "
    "of each per user per project, refilled every minute; past them 429 Too many requests "
    "(status RESOURCE_EXHAUSTED, reason rateLimitExceeded), to back off from exponentially. "
    "https://developers.google.com/workspace/sheets/api/limits",
    basis="One user's reads or writes: burst 5 + 0.9/s x 60 s = 59 per minute (make the user "
    "the tenant, and give a project of many users an app_limit of 300 a minute). A 403 with "
    "a rate-limit reason is a backoff too, as for Google's other APIs.",
    config=IntegrationConfig(
        name="google-sheets", rate_limit_per_sec=0.5, burst_size=5.0, increase_factor=0.05,
        min_rate=0.05, max_rate=0.9, backoff_status_codes=frozenset({403, 429, 503}),
        dialect=GOOGLE,
    ),
    hosts=("sheets.googleapis.com",),
)

YOUTUBE_SOURCE = (
    "YouTube Data API v3: 10,000 quota units a day per project (a list call costs 1, writes "
    "50), and search.list and videos.insert 100 calls a day each in buckets of their own, "
    "reset at midnight Pacific time; a spent quota answers 403 with reason quotaExceeded. "
    "https://developers.google.com/youtube/v3/determine_quota_cost"
)

YOUTUBE = Builtin(
    source=YOUTUBE_SOURCE,
    basis="A day's quota is not modelled as a rate (it would allow 0.1 calls a second): the "
    "rate, at most 20/s with a burst of 10, only spaces the calls, and a spent quota is a "
    "refusal, for every tenant: a failure the breaker counts, which pauses the integration "
    "and probes every 10 minutes until the quota is back, not a backoff retried all day. "
    "Its endpoints send search.list and videos.insert, with quotas of their own, to "
    "youtube-search and youtube-upload.",
    config=IntegrationConfig(
        name="youtube", rate_limit_per_sec=5.0, burst_size=10.0, increase_factor=0.5,
        min_rate=0.1, max_rate=20.0, backoff_status_codes=_BACKOFF,
        breaker_open_seconds=600.0, dialect=YOUTUBE_DAILY,
        endpoints=(
            Endpoint("youtube-search", paths=("/youtube/v3/search",)),
            Endpoint("youtube-upload", paths=("/upload/youtube/v3/videos",)),
        ),
    ),
    hosts=("youtube.googleapis.com",),
)

YOUTUBE_SEARCH = Builtin(
    source=YOUTUBE_SOURCE,
    basis="search.list's own 100 calls a day: its refusal pauses searches, not the rest; "
    "the rate only spaces the calls (at most 1/s).",
    config=IntegrationConfig(
        name="youtube-search", rate_limit_per_sec=0.5, burst_size=2.0, increase_factor=0.05,
        min_rate=0.05, max_rate=1.0, backoff_status_codes=_BACKOFF,
        breaker_open_seconds=600.0, dialect=YOUTUBE_DAILY,
    ),
)

YOUTUBE_UPLOAD = Builtin(
    source=YOUTUBE_SOURCE,
    basis="videos.insert's own 100 calls a day: its refusal pauses uploads, not the rest; "
    "at most 2 uploads at once.",
    config=IntegrationConfig(
        name="youtube-upload", rate_limit_per_sec=0.5, burst_size=2.0, increase_factor=0.05,
        min_rate=0.05, max_rate=1.0, backoff_status_codes=_BACKOFF, max_concurrent=2,
        breaker_open_seconds=600.0, dialect=YOUTUBE_DAILY,
    ),
)

GMAIL = Builtin(
    source="Gmail API: quota units per minute per user per project (6,000 for projects from "
    "May 2026, 15,000 before) and 1,200,000 per project; messages.send costs 100 units, "
    "messages.get and list 5; 403 userRateLimitExceeded or rateLimitExceeded, 429 for too "
    "many concurrent requests or a user's sending limit, 403 dailyLimitExceeded. "
    "https://developers.google.com/workspace/gmail/api/reference/quota",
    basis="Counted in reads of 5 units: burst 20 + 15/s x 60 s = 920 a minute, 4,600 units; "
    "make the mailbox the tenant. A message sent (100 units) is charged cost=20. At most 10 "
    "calls at once: Google's 429 for too many concurrent requests states no figure.",
    config=IntegrationConfig(
        name="gmail", rate_limit_per_sec=3.0, burst_size=20.0, increase_factor=0.3,
        min_rate=0.1, max_rate=15.0, backoff_status_codes=_BACKOFF, max_concurrent=10,
        dialect=GOOGLE_DAILY,
    ),
    hosts=("gmail.googleapis.com",),
)

GOOGLE_CALENDAR = Builtin(
    source="Google Calendar API: 600 requests a minute per user per project and 10,000 per "
    "project, over a sliding window; 403 or 429 with reason rateLimitExceeded or "
    "userRateLimitExceeded; 403 quotaExceeded when a calendar's usage limits (events "
    "created, invitations, sharing) are spent, for hours. "
    "https://developers.google.com/workspace/calendar/api/guides/quota",
    basis="One user: burst 5 + 9/s x 60 s = 545 a minute; make the user the tenant. "
    "quotaExceeded is a refusal (retrying soon only extends it), that user's: the breaker "
    "counts it only for a call made without a tenant; dailyLimitExceeded, the project's, "
    "it counts for every call.",
    config=IntegrationConfig(
        name="google-calendar", rate_limit_per_sec=2.0, burst_size=5.0, increase_factor=0.2,
        min_rate=0.1, max_rate=9.0, backoff_status_codes=_BACKOFF,
        breaker_open_seconds=600.0, dialect=GOOGLE_DAILY,
    ),
)

GOOGLEAPIS = Builtin(
    source="www.googleapis.com serves several Google APIs, each limited apart: Drive "
    "(/drive/, /upload/drive/), Gmail (/gmail/), Calendar (/calendar/), YouTube (/youtube/). "
    "https://developers.google.com/workspace/guides/view-edit-quotas",
    basis="Each API's paths go to its integration (endpoints); another API on this host "
    "stays here, at a modest 5/s up to 20/s, a 403 with a rate-limit reason a backoff.",
    config=IntegrationConfig(
        name="googleapis", rate_limit_per_sec=5.0, burst_size=5.0, increase_factor=0.5,
        min_rate=0.1, max_rate=20.0, backoff_status_codes=_BACKOFF, dialect=GOOGLE,
        endpoints=(
            Endpoint("google-drive", paths=("/drive/", "/upload/drive/", "/batch/drive/")),
            Endpoint("gmail", paths=("/gmail/", "/upload/gmail/", "/batch/gmail/")),
            Endpoint("google-calendar", paths=("/calendar/", "/batch/calendar/")),
            Endpoint("youtube-search", paths=("/youtube/v3/search",)),
            Endpoint("youtube-upload", paths=("/upload/youtube/v3/videos",)),
            Endpoint("youtube", paths=("/youtube/", "/upload/youtube/")),
        ),
    ),
    hosts=("www.googleapis.com",),
)

BUILTINS: tuple[Builtin, ...] = (
    GOOGLEAPIS, GOOGLE_DRIVE, GOOGLE_SHEETS, GOOGLE_CALENDAR, GMAIL, YOUTUBE, YOUTUBE_SEARCH,
    YOUTUBE_UPLOAD,
)
# fmt: on

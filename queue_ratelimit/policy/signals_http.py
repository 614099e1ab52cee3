"""What an HTTP response says about rate limits: backoff, how long to wait, quotas left.

:func:`parse_rate_limit` reads a status, headers and (optionally) a body into a
:class:`RateLimitInfo`. It is pure (no I/O; the clock is read only when ``now`` is None)
and total: no header or body, however malformed, hostile or large, makes it raise.

Headers read (names case-insensitive; of a repeated header the first valid value counts, and
a value a client joined from repeats, ``"5, 5"``, is also tried by its first element):

* ``retry-after-ms`` (OpenAI, Azure) and ``Retry-After`` (RFC 9110: delta-seconds, decimals
  accepted, or an HTTP-date), in that order; then a header the dialect names; on a backoff a
  wait the body states (Discord's ``{"retry_after": 1.5}``, the dialect's ``wait_fields``);
  last the dialect's ``default_wait``, unless a spent quota's reset says when.
* ``X-RateLimit-Limit/-Remaining/-Used/-Reset/-Reset-After`` (GitHub, Discord, Atlassian,
  many others), ``X-Rate-Limit-*`` (Twitter/X), a bare ``X-Rate-Limit`` (Zendesk),
  ``RateLimit-ResetTime`` (GitLab), IETF ``RateLimit-Limit/-Remaining/-Reset``
  (drafts up to -06), IETF structured ``RateLimit: "name";r=50;t=30`` with
  ``RateLimit-Policy: "name";q=100;w=60`` (-08 and later) and the -07 dictionary form.
* Named quotas: OpenAI ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, Anthropic
  ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*`` (keys use ``_``,
  e.g. ``input_tokens``, to match :class:`~queue_ratelimit.limit_config.LimitConfig` names), Linear
  ``x-ratelimit-{requests,complexity}-{limit,remaining,reset}``, IETF policies by name,
  HubSpot ``secondly`` and ``daily``, Salesforce ``per_app``, and any header the dialect's
  ``headers`` map names.
* Shopify ``X-Shopify-Shop-Api-Call-Limit: used/limit``, Salesforce ``Sforce-Limit-Info:
  api-usage=used/limit``, HubSpot ``X-HubSpot-RateLimit-*`` (its window length,
  ``-Interval-Milliseconds``, is reported as ``reset_after``: an upper bound), Atlassian
  ``X-RateLimit-NearLimit`` (``near_limit``).

Rules:

* **Reset values** may be delta seconds, epoch seconds or epoch milliseconds, told apart by
  magnitude: ``>= 1e12`` is epoch ms, ``>= 1e9`` (September 2001) epoch seconds, anything
  smaller delta seconds. Durations (``6m0s``, ``20ms``, ``1m30.5s``), RFC 3339 timestamps
  (Anthropic, Atlassian's ``2024-05-01T12:01Z``) and HTTP-dates are read as such. A relative
  ``-Reset-After`` beats an absolute ``-Reset`` (no clock skew).
* **Backoff** needs the status in ``backoff_status_codes`` (or the dialect's
  ``backoff_statuses``). 429 and 503 there are always a backoff, as are the dialect's own
  (Anthropic's 529); any other listed status (typically GitHub's 403) only with rate-limit
  evidence: a retry delay, an exhausted quota (``remaining == 0``), rate-limit wording in the
  body ("rate limit", "too many requests", "throttl..."), or one of the dialect's
  ``throttle_codes`` in it. A plain 403 is a permission error. On a status the dialect names
  in ``body_statuses`` (a GraphQL 200), a throttle code in the body is a backoff
  (:mod:`~queue_ratelimit.policy.signals_body` says how bodies are read).
* **Refusals**: one of the dialect's ``refusal_codes`` in a body read (on the statuses
  above: a backoff status or the dialect's ``body_statuses``), or in a header mapped to
  ``code``, is no backoff: the account's credit or plan quota is spent (OpenAI's ``429
  insufficient_quota``), which no wait mends. ``refused`` names the code.
* **Contention**: one of the dialect's ``contention_codes``, read the same way, is no
  backoff either: one object the call touches is busy or at a limit of its own (Stripe's
  ``429 lock_timeout``, its ``Stripe-Rate-Limited-Reason: resource-specific``), not the
  API's rate. ``contended`` names the code; a refusal's code wins over it.
* **Points budgets** the dialect locates (``cost_fields``: a GraphQL cost) become the quota
  ``cost_quota`` (reset: what is spent over the restore rate) and :attr:`RateLimitInfo.costs`
  (the call's actual cost); a throttled query waits until its requested cost is restored.
* ``retry_after`` is reported on backoff responses only: a ``Retry-After`` on a 202 (a
  polling hint) or a 3xx is not a rate limit. A backoff without one (Airtable's fixed 30 s
  penalty, Stripe, whose ``Stripe-Should-Retry`` says whether, not when) has
  ``retry_after=None``; the caller's configuration supplies the cooldown.
* A backoff whose headers and body fields state no wait takes one its body states in words
  ("Retry after 2026-04-19T23:39:25.148Z", Gmail's; "Please retry after 6 seconds", "Please
  try again in 1.8s"), before the dialect's ``default_wait``; words never make a backoff
  (a 403 "try again in 30 minutes" of a locked account is a permission error).
* When ``Retry-After`` and a reset header disagree, ``retry_after`` comes from
  ``Retry-After`` and ``reset_after`` keeps the reset; :attr:`RateLimitInfo.wait` prefers
  ``retry_after``.
* Discord's body ``retry_after`` is read as seconds (API v8+; the integer milliseconds of
  retired versions are thus read as too long a wait and clamped, never too short).
* The top-level ``limit/remaining/reset_after`` are the ``requests`` quota, else the unnamed
  one, else the most restrictive named one (lowest share of its limit left, an exhausted one
  first, ties to the later reset). ``quotas`` holds the named quotas only.

Hostile input, by kind:

* Not a number (garbage, ``NaN``, ``inf``, exponents, signs, non-ASCII digits, empty) and
  negative numbers: ignored, as if absent. Counts must be whole (``59`` or ``59.0``).
* Delays and resets are clamped to ``[0, max_backoff]``: a date or epoch reset in the past
  gives 0, ``Retry-After: 99999999999`` gives ``max_backoff``. ``reset_after`` is clamped
  too: a limiter never plans further ahead than it would back off.
* Header values over 256 characters, past the first 512 headers, or past the 8th repeat
  are ignored unread; so are bodies of 64 kB or more. A body is read only on a status that
  may back off or that the dialect names, parsed as JSON only when it mentions something
  looked for, walked a bounded depth and breadth; any failure ignores it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from queue_ratelimit.config import PRIMARY_LIMIT
from queue_ratelimit.dialect import GENERIC, Dialect
from queue_ratelimit.policy.header_values import decimal, retry_delay
from queue_ratelimit.policy.signals_body import (
    NOTHING,
    BodyReading,
    mentions_rate_limit,
    read_body,
    wait_in_words,
)
from queue_ratelimit.policy.signals_headers import DIALECTS, HeaderView, QuotaDraft, Readings

__all__ = ["Quota", "RateLimitInfo", "parse_rate_limit"]

_ALWAYS_BACKOFF = frozenset({429, 503})


@dataclass(frozen=True)
class Quota:
    """One limit as the API reported it; any field the response did not state is None.

    Attributes:
        limit: units allowed per window.
        remaining: units left in the current window.
        reset_after: seconds until the window resets, within ``[0, max_backoff]``.
    """

    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None


def _no_quotas() -> Mapping[str, Quota]:
    return MappingProxyType({})


def _no_costs() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class RateLimitInfo:
    """What one response says about rate limits; the default instance says nothing.

    Attributes:
        backoff: the response is a rate-limit rejection; the limiter should slow down.
        retry_after: on a backoff, seconds until a retry is allowed, when the API said so;
            within ``[0, max_backoff]``.
        limit: the headline quota's limit (see the module docstring for which quota).
        remaining: the headline quota's units left.
        reset_after: seconds until the headline quota resets, within ``[0, max_backoff]``.
        quotas: every named quota (``"requests"``, ``"tokens"``, ...), read-only.
        near_limit: the API flagged the quota as nearly spent (Atlassian).
        costs: what the call actually cost, by quota, when the body said so (a GraphQL
            ``actualQueryCost``, through the dialect's ``cost_fields``).
        refused: the dialect's refusal code the answer stated (a spent credit or plan
            quota: waiting will not mend it), else None; such an answer is no backoff.
        contended: the dialect's contention code the answer stated (one object the call
            touches is busy: Stripe's ``lock_timeout``), else None; no backoff either, and
            ``retry_after`` is the wait it stated, if any.
    """

    backoff: bool = False
    retry_after: float | None = None
    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    quotas: Mapping[str, Quota] = field(default_factory=_no_quotas, hash=False)
    near_limit: bool = False
    costs: Mapping[str, float] = field(default_factory=_no_costs, hash=False)
    refused: str | None = None
    contended: str | None = None

    @property
    def wait(self) -> float | None:
        """Seconds to hold off before the next call, or None when nothing says to wait.

        ``retry_after`` when set; else the longest ``reset_after`` of an exhausted quota
        (the headline one or a named one, so spent tokens hold calls back too); else None.
        A success with ``remaining == 0`` is no backoff, but its ``wait`` is the reset.
        """
        if self.retry_after is not None:
            return self.retry_after
        headline = Quota(self.limit, self.remaining, self.reset_after)
        waits = [
            quota.reset_after
            for quota in (headline, *self.quotas.values())
            if quota.remaining == 0 and quota.reset_after is not None
        ]
        return max(waits, default=None)


def parse_rate_limit(
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | str | Mapping[str, object] | None = None,
    now: float | None = None,
    *,
    backoff_status_codes: Collection[int] = _ALWAYS_BACKOFF,
    max_backoff: float = 300.0,
    dialect: Dialect = GENERIC,
) -> RateLimitInfo:
    """Read a response's status, headers and body into a :class:`RateLimitInfo`.

    Never raises on any response content; the module docstring states every rule.

    Args:
        status: the HTTP status code.
        headers: a mapping (``dict``, ``requests``' ``CaseInsensitiveDict``,
            ``httpx.Headers``) or an iterable of ``(name, value)`` pairs.
        body: the response body, raw or already decoded from JSON; read only on a backoff.
        now: the current epoch time in seconds; ``time.time()`` when None.
        backoff_status_codes: the statuses that may signal a backoff
            (:attr:`~queue_ratelimit.config.IntegrationConfig.backoff_status_codes`).
        max_backoff: the clamp on every delay, in seconds
            (:attr:`~queue_ratelimit.config.IntegrationConfig.max_backoff`).
        dialect: what this API states its own way (:class:`~queue_ratelimit.Dialect`:
            statuses, body codes and waits, header names, reset unit, documented wait).

    Raises:
        ValueError: ``max_backoff`` is not a finite number > 0 (a caller error).
    """
    if not (math.isfinite(max_backoff) and max_backoff > 0):
        raise ValueError(f"max_backoff must be a finite number > 0, not {max_backoff!r}")
    now = time.time() if now is None else now
    view = HeaderView(headers)
    readings = Readings(reset_unit=dialect.reset_unit, header_map=dialect.headers)
    for read in DIALECTS:
        read(view, now, readings)
    drafts = {name: _finish(draft, max_backoff) for name, draft in readings.quotas.items()}
    if dialect.resource_header is not None:
        resource = view.first(dialect.resource_header, _named)
        if resource is not None and resource not in dialect.resources:
            drafts = {}  # (the headers describe another of the API's limits)
    quotas = {name: quota for name, quota in drafts.items() if name and quota != Quota()}
    headline = _headline(drafts.get(""), quotas)
    always = _ALWAYS_BACKOFF | dialect.backoff_statuses
    codes = frozenset(backoff_status_codes) | dialect.backoff_statuses
    said = NOTHING
    contended = None
    if status in codes or status in dialect.body_statuses:
        paths = dialect.cost_paths()
        # a refusal's and a contention's codes end the call alike (no backoff): read as one
        stops = dialect.refusal_codes | dialect.contention_codes
        said = read_body(body, dialect.throttle_codes, dialect.wait_fields, paths, now, stops)
        if not said.throttled and set(readings.codes) & dialect.throttle_codes:
            said = BodyReading(True, said.wait, said.figures, said.refused)  # a header's code
        named = sorted(
            set(readings.codes) & stops, key=lambda c: (c in dialect.contention_codes, c)
        )
        if said.refused is None and named:  # (a refusal first: no wait mends it)
            said = BodyReading(said.throttled, said.wait, said.figures, named[0])
    contended = said.refused if said.refused in dialect.contention_codes else None
    costs = {**readings.costs, **_cost_quota(said.figures, quotas, dialect.cost_quota, max_backoff)}
    exhausted = any(quota.remaining == 0 for quota in (headline, *quotas.values()))
    stated = _header_delay(view, now)
    if stated is None:
        stated = readings.retry_after
    if stated is None and (status in codes or said.throttled):
        stated = said.wait
    if stated is None and said.throttled:  # a points budget: until the call's cost is restored
        stated = _restored_in(said.figures)
    # wording is evidence only where no exact codes are known (a 400 that names a field
    # "throttlingBurstLimit" is a validation error of an API that states its throttles),
    # unless the dialect says its API words some throttles (``Dialect.wording``)
    worded = dialect.reads_wording and mentions_rate_limit(body)
    backoff = not said.refused and (
        said.throttled
        or (status in codes and (status in always or stated is not None or exhausted or worded))
    )
    timed = any(  # a spent quota whose reset says when (a leaky bucket's "40/40" does not)
        quota.remaining == 0 and quota.reset_after is not None
        for quota in (headline, *quotas.values())
    )
    if backoff and stated is None:  # (words are a wait only, never evidence of a backoff)
        stated = wait_in_words(body, now)
    if backoff and stated is None and not timed and status != 503:
        stated = dialect.default_wait  # documented for its limits; a 503 may be an outage
    retry_after = _clamp(stated, max_backoff)
    return RateLimitInfo(
        backoff=backoff,
        retry_after=retry_after if backoff or contended else None,
        limit=headline.limit,
        remaining=headline.remaining,
        reset_after=headline.reset_after,
        quotas=MappingProxyType(quotas),
        near_limit=readings.near_limit,
        costs=MappingProxyType(costs),
        refused=None if contended else said.refused,
        contended=contended,
    )


def _cost_quota(
    figures: Mapping[str, float], quotas: dict[str, Quota], name: str, max_backoff: float
) -> dict[str, float]:
    """Add the points budget a body stated to ``quotas`` (as ``name``); the call's actual
    cost by quota name (empty when none was stated)."""
    if not figures:
        return {}
    limit, remaining = figures.get("limit"), figures.get("remaining")
    reset = figures.get("reset")
    restore = figures.get("restore_rate")
    if reset is None and restore and limit is not None and remaining is not None:
        reset = max(0.0, limit - remaining) / restore  # until what is spent is restored
    quota = Quota(
        None if limit is None else int(limit),
        None if remaining is None else int(remaining),
        _clamp(reset, max_backoff),
    )
    if quota != Quota():
        quotas[name] = quota
    actual = figures.get("actual")
    return {} if actual is None else {name: actual}


def _restored_in(figures: Mapping[str, float]) -> float | None:
    """Seconds until a budget restoring at ``restore_rate`` holds the ``requested`` cost."""
    requested, remaining = figures.get("requested"), figures.get("remaining")
    restore = figures.get("restore_rate")
    if requested is None or remaining is None or not restore:
        return None
    return max(0.0, requested - remaining) / restore


def _named(text: str) -> str | None:
    """A header value as a name (None when empty)."""
    return text.strip() or None


def _clamp(seconds: float | None, max_backoff: float) -> float | None:
    """Clamp a delay to ``[0, max_backoff]``; None and NaN stay unknown."""
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), max_backoff)


def _finish(draft: QuotaDraft, max_backoff: float) -> Quota:
    """Turn a draft into a quota: derive ``remaining`` from ``used``, clamp the reset."""
    remaining = draft.remaining
    if remaining is None and draft.limit is not None and draft.used is not None:
        remaining = max(draft.limit - draft.used, 0)
    return Quota(draft.limit, remaining, _clamp(draft.reset_after, max_backoff))


def _restrictiveness(quota: Quota) -> tuple[float, float]:
    """Sort key: the smaller, the more restrictive (share of the limit left, later reset)."""
    if quota.remaining is None:
        share = 2.0  # nothing known: least restrictive
    elif quota.remaining == 0:
        share = 0.0
    elif quota.limit:
        share = min(quota.remaining / quota.limit, 1.0)
    else:
        share = 1.0
    return share, -(quota.reset_after or 0.0)


def _headline(unnamed: Quota | None, named: Mapping[str, Quota]) -> Quota:
    """Pick the top-level quota: ``requests``, else the unnamed, else the most restrictive."""
    if PRIMARY_LIMIT in named:
        return named[PRIMARY_LIMIT]
    if unnamed is not None and unnamed != Quota():
        return unnamed
    return min(named.values(), key=_restrictiveness, default=Quota())


def _header_delay(view: HeaderView, now: float) -> float | None:
    """Return ``retry-after-ms`` (OpenAI, Azure) in seconds, else ``Retry-After``, else None."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        millis = view.first(name, decimal)
        if millis is not None:
            return millis / 1000.0
    return view.first("retry-after", lambda text: retry_delay(text, now))


if TYPE_CHECKING:  # the old name, for type checkers (at run time it warns, below)
    RateLimitSignal = RateLimitInfo


def __getattr__(name: str) -> object:
    if name == "RateLimitSignal":  # the old name, kept for one release
        warnings.warn(
            "RateLimitSignal is deprecated: use queue_ratelimit.RateLimitInfo",
            DeprecationWarning,
            stacklevel=2,
        )
        return RateLimitInfo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

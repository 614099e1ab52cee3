"""What an HTTP response says about rate limits: backoff, how long to wait, quotas left.

:func:`parse_rate_limit` reads a status, headers and (optionally) a body into a
:class:`RateLimitInfo`. It is pure (no I/O; the clock is read only when ``now`` is None)
and total: no header or body, however malformed, hostile or large, makes it raise.

Headers read (names case-insensitive; of a repeated header the first valid value counts, and
a value a client joined from repeats, ``"5, 5"``, is also tried by its first element):

* ``retry-after-ms`` (OpenAI, Azure) and ``Retry-After`` (RFC 9110: delta-seconds, decimals
  accepted, or an HTTP-date), in that order; on a backoff a Discord-style JSON body
  ``{"retry_after": 1.5}`` is the fallback.
* ``X-RateLimit-Limit/-Remaining/-Used/-Reset/-Reset-After`` (GitHub, Discord, Atlassian,
  many others), ``X-Rate-Limit-*`` (Twitter/X), IETF ``RateLimit-Limit/-Remaining/-Reset``
  (drafts up to -06), IETF structured ``RateLimit: "name";r=50;t=30`` with
  ``RateLimit-Policy: "name";q=100;w=60`` (-08 and later) and the -07 dictionary form.
* Named quotas: OpenAI ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, Anthropic
  ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*`` (keys use ``_``,
  e.g. ``input_tokens``, to match :class:`~queue_ratelimit.config.LimitConfig` names), IETF
  policies by name, HubSpot ``secondly`` and ``daily``, Salesforce ``per_app``.
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
* **Backoff** needs the status in ``backoff_status_codes``. 429 and 503 there are always a
  backoff; any other listed status (typically GitHub's 403) only with rate-limit evidence: a
  retry delay, an exhausted quota (``remaining == 0``), or rate-limit wording in the body
  ("rate limit", "too many requests", "throttl..."). A plain 403 is a permission error.
* ``retry_after`` is reported on backoff responses only: a ``Retry-After`` on a 202 (a
  polling hint) or a 3xx is not a rate limit. A backoff without one (Airtable's fixed 30 s
  penalty, Stripe, whose ``Stripe-Should-Retry`` says whether, not when) has
  ``retry_after=None``; the caller's configuration supplies the cooldown.
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
  are ignored unread; so are bodies of 64 kB or more. A body is parsed as JSON only on a
  backoff and only when it mentions ``retry_after``; any failure ignores it.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from queue_ratelimit.config import PRIMARY_LIMIT
from queue_ratelimit.policy.signals_headers import (
    DIALECTS,
    HeaderView,
    QuotaDraft,
    Readings,
    decimal,
    retry_delay,
)

__all__ = ["Quota", "RateLimitInfo", "parse_rate_limit"]

_ALWAYS_BACKOFF = frozenset({429, 503})
_MAX_BODY_BYTES = 64 * 1024
_MAX_WORDING_CHARS = 4096
_RATE_LIMIT_WORDING = re.compile(r"rate[ _-]?limit|too many requests|throttl", re.IGNORECASE)
_BODY_DELAY_KEY = "retry_after"


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
    """

    backoff: bool = False
    retry_after: float | None = None
    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    quotas: Mapping[str, Quota] = field(default_factory=_no_quotas, hash=False)
    near_limit: bool = False

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

    Raises:
        ValueError: ``max_backoff`` is not a finite number > 0 (a caller error).
    """
    if not (math.isfinite(max_backoff) and max_backoff > 0):
        raise ValueError(f"max_backoff must be a finite number > 0, not {max_backoff!r}")
    now = time.time() if now is None else now
    view = HeaderView(headers)
    readings = Readings()
    for read in DIALECTS:
        read(view, now, readings)
    drafts = {name: _finish(draft, max_backoff) for name, draft in readings.quotas.items()}
    quotas = {name: quota for name, quota in drafts.items() if name and quota != Quota()}
    headline = _headline(drafts.get(""), quotas)
    retry_after = _retry_after(status, view, body, now, backoff_status_codes, max_backoff)
    exhausted = any(quota.remaining == 0 for quota in (headline, *quotas.values()))
    backoff = status in backoff_status_codes and (
        status in _ALWAYS_BACKOFF
        or retry_after is not None
        or exhausted
        or _mentions_rate_limit(body)
    )
    return RateLimitInfo(
        backoff=backoff,
        retry_after=retry_after if backoff else None,
        limit=headline.limit,
        remaining=headline.remaining,
        reset_after=headline.reset_after,
        quotas=MappingProxyType(quotas),
        near_limit=readings.near_limit,
    )


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


def _retry_after(
    status: int,
    view: HeaderView,
    body: object,
    now: float,
    backoff_status_codes: Collection[int],
    max_backoff: float,
) -> float | None:
    """Return the clamped retry delay from the headers, else (on a backoff) from the body."""
    delay = _header_delay(view, now)
    if delay is None and status in backoff_status_codes:
        delay = _body_delay(body)
    return _clamp(delay, max_backoff)


def _header_delay(view: HeaderView, now: float) -> float | None:
    """Return ``retry-after-ms`` (OpenAI, Azure) in seconds, else ``Retry-After``, else None."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        millis = view.first(name, decimal)
        if millis is not None:
            return millis / 1000.0
    return view.first("retry-after", lambda text: retry_delay(text, now))


def _body_text(body: object) -> str | None:
    """Return a small body as text (bytes decoded leniently), else None."""
    if isinstance(body, (bytes, str)) and len(body) < _MAX_BODY_BYTES:
        return body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return None


def _body_delay(body: object) -> float | None:
    """Return a Discord-style ``retry_after`` (seconds) from a JSON object body, else None."""
    document: object = body
    if not isinstance(body, Mapping):
        text = _body_text(body)
        if text is None or _BODY_DELAY_KEY not in text:
            return None
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            return None
    if not isinstance(document, Mapping):
        return None
    value = document.get(_BODY_DELAY_KEY)
    if isinstance(value, str):
        return decimal(value.strip())
    if isinstance(value, float):
        return value if value >= 0 else None  # NaN fails the test too
    if isinstance(value, int) and not isinstance(value, bool):
        return float(min(value, 10**300)) if value >= 0 else None  # no OverflowError
    return None


def _strings(value: object, depth: int = 3) -> Iterator[str]:
    """Yield the strings in a decoded JSON value, a few levels and items deep."""
    if isinstance(value, str):
        yield value
    elif depth > 0 and isinstance(value, Mapping):
        for item in itertools.islice(value.values(), 16):
            yield from _strings(item, depth - 1)
    elif depth > 0 and isinstance(value, (list, tuple)):
        for item in itertools.islice(value, 16):
            yield from _strings(item, depth - 1)


def _mentions_rate_limit(body: object) -> bool:
    """Return whether the body speaks of a rate limit (GitHub's secondary-limit 403)."""
    text = " ".join(_strings(body)) if isinstance(body, Mapping) else _body_text(body)
    if not text:
        return False
    return _RATE_LIMIT_WORDING.search(text[:_MAX_WORDING_CHARS]) is not None


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

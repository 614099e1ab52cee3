"""Reading rate-limit headers: any shape of header collection, and each API's dialect of them.

Internal to :mod:`queue_ratelimit.policy.signals_http`, whose docstring states the rules
(which header wins, what is clamped, what is ignored). This module only turns header text
into quotas and delays, through the value grammar of
:mod:`~queue_ratelimit.policy.header_values`: every function is total (any input gives a
value or ``None``, never an exception) and cheap whatever the input's size, because a value
longer than :data:`MAX_VALUE_CHARS` is dropped before it is looked at.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from queue_ratelimit.policy.header_values import (
    count,
    decimal,
    is_true,
    policy_name,
    reset_delay,
    retry_delay,
    sf_members,
    used_of,
)

__all__ = ["DIALECTS", "MAX_VALUE_CHARS", "HeaderView", "QuotaDraft", "Readings"]

_T = TypeVar("_T")

MAX_VALUE_CHARS = 256
"""Header values longer than this are ignored unread (no rate-limit value is this long)."""
_MAX_NAME_CHARS = 128
_MAX_HEADERS = 512
_MAX_VALUES_PER_NAME = 8
_MAX_NAMED_QUOTAS = 16
_SALESFORCE = re.compile(r"(?:^|[;,\s])(per-app-api-usage|api-usage)=([0-9]{1,18})/([0-9]{1,18})")
_OPENAI_NAMED = re.compile(r"x-ratelimit-(limit|remaining|reset)-([a-z][a-z0-9_-]{0,31})")
_ANTHROPIC_NAMED = re.compile(
    r"anthropic-ratelimit-([a-z][a-z0-9_-]{0,31}?)-(limit|remaining|reset)"
)
_PREFIXED_NAMED = re.compile(  # Linear's; other names are not read as quotas by default
    r"x-ratelimit-((?:endpoint-)?(?:requests|complexity))-(limit|remaining|reset)"
)
_NOT_A_QUOTA = frozenset({"after"})  # x-ratelimit-reset-after is Discord's delta, not a quota

# --- Header access -------------------------------------------------------------------------


def _text(value: object, limit: int) -> str | None:
    """Return a header name or value as stripped text, or None if it is not one we read."""
    if isinstance(value, bytes):
        value = value.decode("latin-1") if len(value) <= limit else None
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() < 64:
        value = str(value)
    if not isinstance(value, str) or len(value) > limit:
        return None
    return value.strip()


def _pairs(headers: object) -> Iterator[tuple[object, object]]:
    """Yield (name, value) from a mapping, a multi-dict or an iterable of pairs."""
    source: object = headers
    for method in ("multi_items", "items"):  # httpx.Headers keeps repeats in multi_items()
        getter = getattr(headers, method, None)
        if callable(getter):
            source = getter()
            break
    if isinstance(source, (str, bytes)) or not isinstance(source, Iterable):
        return
    for item in source:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            yield item[0], item[1]


class HeaderView:
    """Response headers of any common shape, read case-insensitively and defensively.

    Accepts a dict, a list of pairs, ``requests``' ``CaseInsensitiveDict``, ``httpx.Headers``
    or any object with ``items()``. Names are lower-cased; the first 512 headers and the
    first 8 values of a name are kept; values longer than :data:`MAX_VALUE_CHARS`, and
    values that are neither text, bytes nor int, are dropped.
    """

    def __init__(self, headers: object) -> None:
        self._values: dict[str, list[str]] = {}
        for raw_name, raw_value in itertools.islice(_pairs(headers), _MAX_HEADERS):
            name, value = _text(raw_name, _MAX_NAME_CHARS), _text(raw_value, MAX_VALUE_CHARS)
            if name and value is not None:
                values = self._values.setdefault(name.lower(), [])
                if len(values) < _MAX_VALUES_PER_NAME:
                    values.append(value)

    def names(self) -> list[str]:
        """Return the lower-cased header names present."""
        return list(self._values)

    def first(self, name: str, read: Callable[[str], _T | None]) -> _T | None:
        """Return the first value of ``name`` that ``read`` accepts, else None.

        A value that a client joined from repeated headers (``"5, 5"``, as ``requests``
        does) is also tried by its first element.
        """
        values = self._values.get(name, [])
        joined = (value.split(",", 1)[0].strip() for value in values if "," in value)
        for value in itertools.chain(values, joined):
            result = read(value)
            if result is not None:
                return result
        return None


# --- Dialects ------------------------------------------------------------------------------


@dataclass
class QuotaDraft:
    """One quota as read so far; a field once set is kept (earlier dialects are trusted)."""

    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    used: int | None = None

    def offer(
        self,
        limit: int | None = None,
        remaining: int | None = None,
        reset_after: float | None = None,
        used: int | None = None,
    ) -> None:
        """Fill in whichever of these fields are still unknown."""
        self.limit = self.limit if self.limit is not None else limit
        self.remaining = self.remaining if self.remaining is not None else remaining
        self.reset_after = self.reset_after if self.reset_after is not None else reset_after
        self.used = self.used if self.used is not None else used


@dataclass
class Readings:
    """What the dialects read: quotas by name (``""`` is the unnamed one), flags, and a
    retry delay and the call's costs from headers the API's dialect names; ``reset_unit``
    and ``header_map`` are the dialect's, given before reading."""

    quotas: dict[str, QuotaDraft] = field(default_factory=dict)
    near_limit: bool = False
    retry_after: float | None = None
    costs: dict[str, float] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    reset_unit: str = "auto"
    header_map: Mapping[str, str] = field(default_factory=dict)

    def reset(self, now: float) -> Callable[[str], float | None]:
        """The reader of a reset value in this dialect's unit."""
        return lambda text: reset_delay(text, now, self.reset_unit)

    def quota(self, name: str) -> QuotaDraft:
        """Return the draft for ``name``; past 16 named quotas, a throwaway draft."""
        if name not in self.quotas and len(self.quotas) > _MAX_NAMED_QUOTAS:
            return QuotaDraft()
        return self.quotas.setdefault(name, QuotaDraft())


def _read_mapped(view: HeaderView, now: float, out: Readings) -> None:
    """The headers the API's dialect names: ``{"X-Points-Left": "points.remaining"}``."""
    for header, target in out.header_map.items():
        quota, _, what = target.rpartition(".")
        if what == "code":
            code = view.first(header, lambda text: text.partition(":")[0].strip() or None)
            if code is not None:
                out.codes.append(code)
        elif what == "cost":
            spent = view.first(header, decimal)
            if spent is not None:
                out.costs.setdefault(quota or "requests", spent)
        elif what == "retry_after_ms":
            millis = view.first(header, decimal)
            if out.retry_after is None and millis is not None:
                out.retry_after = millis / 1000.0
        elif what == "retry_after":
            if out.retry_after is None:
                out.retry_after = view.first(header, lambda text: retry_delay(text, now))
        elif what == "reset":
            out.quota(quota).offer(reset_after=view.first(header, out.reset(now)))
        elif what in ("limit", "remaining", "used"):
            out.quota(quota).offer(**{what: view.first(header, count)})


def _read_unnamed(view: HeaderView, now: float, out: Readings) -> None:
    """``X-RateLimit-*`` (GitHub, Discord, Atlassian), ``X-Rate-Limit-*`` (X), ``RateLimit-*``,
    a bare ``X-Rate-Limit`` limit (Zendesk) and ``RateLimit-ResetTime`` (GitLab, a date)."""
    for prefix in ("x-ratelimit-", "x-rate-limit-", "ratelimit-"):
        reset = view.first(prefix + "reset-after", decimal)  # Discord: relative, no skew
        if reset is None:
            reset = view.first(prefix + "reset", out.reset(now))
        out.quota("").offer(
            limit=view.first(prefix + "limit", count),
            remaining=view.first(prefix + "remaining", count),
            reset_after=reset,
            used=view.first(prefix + "used", count),
        )
    out.quota("").offer(
        limit=view.first("x-rate-limit", count),
        reset_after=view.first("ratelimit-resettime", lambda text: reset_delay(text, now)),
    )


def _read_named(view: HeaderView, now: float, out: Readings) -> None:
    """Named quotas: OpenAI ``x-ratelimit-<field>-<quota>``, Anthropic ``-<quota>-<field>``,
    Linear ``x-ratelimit-<quota>-<field>`` (``requests``, ``complexity``)."""
    for name in view.names():
        if match := _OPENAI_NAMED.fullmatch(name):
            kind, quota = match.groups()
        elif match := _ANTHROPIC_NAMED.fullmatch(name) or _PREFIXED_NAMED.fullmatch(name):
            quota, kind = match.groups()
        else:
            continue
        if quota in _NOT_A_QUOTA:
            continue
        draft = out.quota(quota.replace("-", "_"))
        if kind == "reset":
            draft.offer(reset_after=view.first(name, out.reset(now)))
        elif kind == "limit":
            draft.offer(limit=view.first(name, count))
        else:
            draft.offer(remaining=view.first(name, count))


def _read_ietf_fields(view: HeaderView, now: float, out: Readings) -> None:
    """IETF structured ``RateLimit`` (r, t) and ``RateLimit-Policy`` (q), drafts -07 and -08+."""
    for head, params in view.first("ratelimit", sf_members) or ():
        key, equals, value = (part.strip() for part in head.partition("="))
        if equals:  # draft -07 dictionary: limit=10, remaining=1, reset=7
            _offer_draft07_member(out.quota(""), key.lower(), value)
        elif (name := policy_name(head)) is not None:
            out.quota(name).offer(
                remaining=count(params.get("r", "")), reset_after=decimal(params.get("t", ""))
            )
    for head, params in view.first("ratelimit-policy", sf_members) or ():
        if (name := policy_name(head)) is not None:
            out.quota(name).offer(limit=count(params.get("q", "")))


def _offer_draft07_member(draft: QuotaDraft, key: str, value: str) -> None:
    if key == "limit":
        draft.offer(limit=count(value))
    elif key == "remaining":
        draft.offer(remaining=count(value))
    elif key == "reset":
        draft.offer(reset_after=decimal(value))


def _read_vendor_counters(view: HeaderView, now: float, out: Readings) -> None:
    """Shopify ``used/limit``, Salesforce ``api-usage=used/limit``, Atlassian near-limit."""
    shopify = view.first("x-shopify-shop-api-call-limit", used_of)
    if shopify is not None:
        out.quota("").offer(used=shopify[0], limit=shopify[1])
    salesforce = view.first("sforce-limit-info", lambda text: _SALESFORCE.findall(text) or None)
    for kind, used, limit in salesforce or ():
        name = "" if kind == "api-usage" else "per_app"
        out.quota(name).offer(used=int(used), limit=int(limit))
    if view.first("x-ratelimit-nearlimit", is_true):
        out.near_limit = True


def _read_hubspot(view: HeaderView, now: float, out: Readings) -> None:
    """HubSpot: the per-interval limit (its window length as the reset), secondly, daily."""
    prefix = "x-hubspot-ratelimit-"
    interval_ms = view.first(prefix + "interval-milliseconds", decimal)
    out.quota("").offer(
        limit=view.first(prefix + "max", count),
        remaining=view.first(prefix + "remaining", count),
        reset_after=None if interval_ms is None else interval_ms / 1000.0,
    )
    for window, reset in (("secondly", 1.0), ("daily", None)):
        limit = view.first(prefix + window, count)
        remaining = view.first(prefix + window + "-remaining", count)
        if limit is not None or remaining is not None:
            out.quota(window).offer(limit=limit, remaining=remaining, reset_after=reset)


DIALECTS: tuple[Callable[[HeaderView, float, Readings], None], ...] = (
    _read_mapped,
    _read_unnamed,
    _read_named,
    _read_ietf_fields,
    _read_vendor_counters,
    _read_hubspot,
)
"""The header dialects, most trusted first: an earlier dialect's field is never overwritten."""

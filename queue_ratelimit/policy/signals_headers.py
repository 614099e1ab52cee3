"""Reading rate-limit headers: a lenient grammar for values, and each API's dialect of them.

Internal to :mod:`queue_ratelimit.policy.signals_http`, whose docstring states the rules
(which header wins, what is clamped, what is ignored). This module only turns header text
into numbers: every function is total (any input gives a value or ``None``, never an
exception) and cheap whatever the input's size, because a value longer than
:data:`MAX_VALUE_CHARS` is dropped before it is looked at.

Times come out as raw seconds relative to ``now`` (a reset in the past is negative);
clamping them to ``[0, max_backoff]`` is the caller's single step.
"""

from __future__ import annotations

import email.utils
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TypeVar

__all__ = [
    "DIALECTS",
    "MAX_VALUE_CHARS",
    "HeaderView",
    "QuotaDraft",
    "Readings",
    "decimal",
    "retry_delay",
]

_T = TypeVar("_T")

MAX_VALUE_CHARS = 256
"""Header values longer than this are ignored unread (no rate-limit value is this long)."""
_MAX_NAME_CHARS = 128
_MAX_HEADERS = 512
_MAX_VALUES_PER_NAME = 8
_MAX_NAMED_QUOTAS = 16
_EPOCH_MS_FLOOR = 1e12  # 2001-09-09 in milliseconds: a Reset this large is epoch ms
_EPOCH_S_FLOOR = 1e9  # 2001-09-09 in seconds: a Reset this large is epoch seconds

# ASCII digits only: int() and float() would also take Arabic-Indic or fullwidth digits.
_COUNT = re.compile(r"([0-9]{1,18})(?:\.0*)?")
_DECIMAL = re.compile(r"[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20}")
_UNIT = r"(ms|us|\u00b5s|\u03bcs|ns|h|m|s)"  # micro: "us", MICRO SIGN or GREEK MU
_DURATION = re.compile(rf"(?:[0-9]{{1,12}}(?:\.[0-9]{{1,12}})?{_UNIT}){{1,6}}")
_DURATION_PART = re.compile(rf"([0-9]{{1,12}}(?:\.[0-9]{{1,12}})?){_UNIT}")
_MICRO = {"us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6}
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "ns": 1e-9, **_MICRO}
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}\S{0,40}")
_USED_OF = re.compile(r"([0-9]{1,18})\s*/\s*([0-9]{1,18})")
_SALESFORCE = re.compile(r"(?:^|[;,\s])(per-app-api-usage|api-usage)=([0-9]{1,18})/([0-9]{1,18})")
_OPENAI_NAMED = re.compile(r"x-ratelimit-(limit|remaining|reset)-([a-z][a-z0-9_-]{0,31})")
_ANTHROPIC_NAMED = re.compile(
    r"anthropic-ratelimit-([a-z][a-z0-9_-]{0,31}?)-(limit|remaining|reset)"
)
_NOT_A_QUOTA = frozenset({"after"})  # x-ratelimit-reset-after is Discord's delta, not a quota
_POLICY_NAME = re.compile(r'"([^"\\]{1,64})"|([A-Za-z*][A-Za-z0-9_.:/*-]{0,63})')


# --- Values --------------------------------------------------------------------------------


def count(text: str) -> int | None:
    """Return a non-negative whole number (``"59"``, ``"59.0"``), else ``None``."""
    match = _COUNT.fullmatch(text)
    return int(match.group(1)) if match else None


def decimal(text: str) -> float | None:
    """Return a non-negative decimal (``"1"``, ``"1.5"``, ``".5"``; no sign, no exponent)."""
    return float(text) if _DECIMAL.fullmatch(text) else None


def duration(text: str) -> float | None:
    """Return the seconds in a Go-style duration (OpenAI: ``"6m0s"``, ``"20ms"``, ``"2h3m"``)."""
    if not _DURATION.fullmatch(text):
        return None
    total = 0.0
    for number, unit in _DURATION_PART.findall(text):
        total += float(number) * _UNIT_SECONDS[unit]
    return total


def timestamp(text: str) -> float | None:
    """Return the epoch seconds of an RFC 3339 timestamp or an RFC 9110 HTTP-date."""
    if _RFC3339.fullmatch(text):
        return _iso_timestamp(text)
    if text[:1].isalpha():  # all three HTTP-date formats open with the day's name
        return _http_date_timestamp(text)
    return None


def _iso_timestamp(text: str) -> float | None:
    if text[-1] in "Zz":  # datetime.fromisoformat accepts "Z" only from Python 3.11
        text = text[:-1] + "+00:00"
    try:
        return _epoch(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        return None


def _http_date_timestamp(text: str) -> float | None:
    try:
        return _epoch(email.utils.parsedate_to_datetime(text))
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _epoch(moment: datetime) -> float:
    if moment.tzinfo is None:  # an asctime HTTP-date, or RFC 3339 without offset: UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def reset_delay(text: str, now: float) -> float | None:
    """Return seconds from ``now`` until a reset given as a number, duration or timestamp.

    A number is told apart by magnitude: ``>= 1e12`` is epoch milliseconds, ``>= 1e9``
    epoch seconds, anything smaller delta seconds.
    """
    number = decimal(text)
    if number is None:
        delta = duration(text)
        if delta is not None:
            return delta
        moment = timestamp(text)
        return None if moment is None else moment - now
    if number >= _EPOCH_MS_FLOOR:
        return number / 1000.0 - now
    if number >= _EPOCH_S_FLOOR:
        return number - now
    return number


def retry_delay(text: str, now: float) -> float | None:
    """Return seconds from ``now`` for a ``Retry-After`` value: delta-seconds or a date."""
    number = decimal(text)
    if number is not None:
        return number
    moment = timestamp(text)
    return None if moment is None else moment - now


def used_of(text: str) -> tuple[int, int] | None:
    """Return ``(used, limit)`` from ``"used/limit"`` (Shopify's call-limit header)."""
    match = _USED_OF.fullmatch(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def is_true(text: str) -> bool | None:
    """Return ``True`` for a true-ish flag (``"true"``, ``"1"``, ``"yes"``), else ``None``."""
    return True if text.lower() in ("true", "1", "yes") else None


# --- Structured fields (IETF RateLimit / RateLimit-Policy) ---------------------------------


def _split_unquoted(text: str, separator: str) -> list[str]:
    """Split ``text`` on ``separator`` outside double quotes (backslash escapes honoured)."""
    parts: list[str] = []
    start, quoted, escaped = 0, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def sf_members(text: str) -> list[tuple[str, dict[str, str]]] | None:
    """Return a structured field's members as ``(head, {param: value})``, leniently.

    A list member ``"name";r=5;t=30`` gives ``('"name"', {"r": "5", "t": "30"})``; a
    dictionary member ``limit=10`` gives ``("limit=10", {})``. Anything unparsable simply
    yields heads and values the readers will not accept.
    """
    members = []
    for raw in _split_unquoted(text, ",")[:_MAX_NAMED_QUOTAS]:
        head, *params = _split_unquoted(raw, ";")
        pairs = (param.partition("=") for param in params)
        members.append((head.strip(), {k.strip().lower(): v.strip() for k, _, v in pairs}))
    return members or None


def _policy_name(head: str) -> str | None:
    """Return the quota name for an IETF policy (``"default"`` or ``default``), else None."""
    match = _POLICY_NAME.fullmatch(head)
    if not match:
        return None
    name = re.sub(r"[^a-z0-9_]+", "_", (match.group(1) or match.group(2)).lower()).strip("_")
    return name[:32] or "default"


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
    """What the dialects read: quotas by name (``""`` is the unnamed one) and flags."""

    quotas: dict[str, QuotaDraft] = field(default_factory=dict)
    near_limit: bool = False

    def quota(self, name: str) -> QuotaDraft:
        """Return the draft for ``name``; past 16 named quotas, a throwaway draft."""
        if name not in self.quotas and len(self.quotas) > _MAX_NAMED_QUOTAS:
            return QuotaDraft()
        return self.quotas.setdefault(name, QuotaDraft())


def _read_unnamed(view: HeaderView, now: float, out: Readings) -> None:
    """``X-RateLimit-*`` (GitHub, Discord, Atlassian), ``X-Rate-Limit-*`` (X), ``RateLimit-*``."""
    for prefix in ("x-ratelimit-", "x-rate-limit-", "ratelimit-"):
        reset = view.first(prefix + "reset-after", decimal)  # Discord: relative, no skew
        if reset is None:
            reset = view.first(prefix + "reset", lambda text: reset_delay(text, now))
        out.quota("").offer(
            limit=view.first(prefix + "limit", count),
            remaining=view.first(prefix + "remaining", count),
            reset_after=reset,
            used=view.first(prefix + "used", count),
        )


def _read_named(view: HeaderView, now: float, out: Readings) -> None:
    """Named quotas: OpenAI ``x-ratelimit-<field>-<quota>``, Anthropic ``-<quota>-<field>``."""
    for name in view.names():
        if match := _OPENAI_NAMED.fullmatch(name):
            kind, quota = match.groups()
        elif match := _ANTHROPIC_NAMED.fullmatch(name):
            quota, kind = match.groups()
        else:
            continue
        if quota in _NOT_A_QUOTA:
            continue
        draft = out.quota(quota.replace("-", "_"))
        if kind == "reset":
            draft.offer(reset_after=view.first(name, lambda text: reset_delay(text, now)))
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
        elif (name := _policy_name(head)) is not None:
            out.quota(name).offer(
                remaining=count(params.get("r", "")), reset_after=decimal(params.get("t", ""))
            )
    for head, params in view.first("ratelimit-policy", sf_members) or ():
        if (name := _policy_name(head)) is not None:
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
    _read_unnamed,
    _read_named,
    _read_ietf_fields,
    _read_vendor_counters,
    _read_hubspot,
)
"""The header dialects, most trusted first: an earlier dialect's field is never overwritten."""

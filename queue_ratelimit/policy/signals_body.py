"""Reading a response body for what it says about rate limits: a throttle, a wait, wording.

Internal to :mod:`queue_ratelimit.policy.signals_http`, which decides when a body is read
(only on the statuses a backoff or the dialect names). Every function here is total and
bounded: a body of :data:`MAX_BODY_BYTES` or more is not looked at, a JSON document is
walked at most :data:`_MAX_DEPTH` levels and :data:`_MAX_NODES` values deep, and any
decoding failure reads as "nothing said".

* **JSON**: a throttle code is a string (or whole number) under a key such as ``code``,
  ``type``, ``__type``, ``reason``, ``errorCode``, ``status`` or Dropbox's ``.tag``,
  anywhere in the document: GraphQL ``errors[].extensions.code == "THROTTLED"``, AWS
  ``{"__type": "com.amazon...#ThrottlingException"}`` (compared after the ``#``), Dropbox
  ``"error_summary": "too_many_requests/..."`` (before the ``/``). A wait is the value of a
  key the dialect names (and always ``retry_after``, Discord's): seconds as a number or a
  decimal string, or a duration (Google's ``"retryDelay": "30s"``).
  A refusal code (the dialect's ``refusal_codes``: a spent credit or plan quota) is found
  the same way, also under ``name`` (Resend) and ``policyName`` (HubSpot).
* **XML**: a ``<Code>`` element (AWS Query and S3: ``<Code>Throttling</Code>``,
  ``<Code>SlowDown</Code>``).
* **Wording**: "rate limit", "too many requests", "throttl..." in the text, the evidence a
  403 needs to count as GitHub's rate limit rather than a permission error.
* **A wait in words** (``wait_in_words``): "retry after" or "try again in" followed by a
  time or a span: Gmail's "User-rate limit exceeded.  Retry after
  2026-04-19T23:39:25.148Z", Azure OpenAI's "Please retry after 6 seconds", OpenAI's
  "Please try again in 1.8s" or "in 6m0s". Only a wait, never evidence of a backoff.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

from queue_ratelimit.policy.header_values import decimal, duration, reset_delay, timestamp

__all__ = [
    "MAX_BODY_BYTES",
    "BodyReading",
    "mentions_rate_limit",
    "read_body",
    "wait_in_words",
]

MAX_BODY_BYTES = 64 * 1024
"""Bodies this large or larger are not read (a throttled answer is small)."""

_MAX_DEPTH = 8
_MAX_NODES = 512
_MAX_WORDING_CHARS = 4096
_RATE_LIMIT_WORDING = re.compile(r"rate[ _-]?limit|too many requests|throttl", re.IGNORECASE)
_WAIT_WORDS = re.compile(
    r"\b(?:retry\s+after|try\s+again\s+in)\s+(?:"
    r"(?P<at>[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2}))"
    r"|(?P<span>(?:[0-9]{1,12}(?:\.[0-9]{1,12})?(?:ms|h|m|s)){1,6})(?![A-Za-z])"
    r"|(?P<number>[0-9]{1,12}(?:\.[0-9]{1,12})?)\s*"
    r"(?P<unit>milliseconds?|seconds?|secs?|minutes?|mins?|hours?)\b)",
    re.IGNORECASE,
)
_WORD_SECONDS = {"mil": 1e-3, "sec": 1.0, "min": 60.0, "hou": 3600.0}
_XML_CODE = re.compile(r"<(?:[A-Za-z0-9_]{1,32}:)?Code>\s*([^<\s]{1,128})\s*</", re.IGNORECASE)
_CODE_KEYS = frozenset(
    {
        "code",
        "type",
        "__type",
        "reason",
        "errorcode",
        "error_code",
        "errortype",
        "error_type",
        "status",
        "error",
        ".tag",
        "error_summary",
    }
)
_REFUSAL_KEYS = _CODE_KEYS | {"name", "policyname"}  # (Resend's, HubSpot's: refusals only)
_ERRORS = frozenset({"error", "errors"})
_GENERIC_WAIT = "retry_after"  # Discord's body field, seconds (API v8+)


@dataclass(frozen=True)
class BodyReading:
    """What a body said: a throttle code found, the wait it stated (seconds), the figures
    found at the dialect's cost paths (a reset as seconds from now), and a refusal code."""

    throttled: bool = False
    wait: float | None = None
    figures: Mapping[str, float] = field(default_factory=dict)
    refused: str | None = None


NOTHING = BodyReading()


def read_body(
    body: object,
    throttle_codes: Collection[str],
    wait_fields: Collection[str] = (),
    paths: Mapping[str, tuple[str, ...]] | None = None,
    now: float = 0.0,
    refusal_codes: Collection[str] = (),
) -> BodyReading:
    """Look for ``throttle_codes``, a wait (``retry_after`` or ``wait_fields``), the
    figures at ``paths`` and ``refusal_codes`` in ``body`` (bytes, text or decoded JSON);
    :data:`NOTHING` when it says none of these or cannot be read."""
    paths = paths or {}
    waits = (_GENERIC_WAIT, *wait_fields)
    if isinstance(body, (Mapping, list)):
        return _read_json(body, throttle_codes, waits, paths, now, refusal_codes)
    text = body_text(body)
    if text is None:
        return NOTHING
    head = text.lstrip()[:1]
    if head in ("{", "["):
        wanted = (
            *throttle_codes,
            *refusal_codes,
            *waits,
            *(keys[-1] for keys in paths.values()),
        )
        if not any(word in text for word in wanted):
            return NOTHING  # nothing it looks for is there: skip the decoding
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            return NOTHING
        return _read_json(document, throttle_codes, waits, paths, now, refusal_codes)
    if head == "<" and throttle_codes:
        codes = itertools.islice(_XML_CODE.finditer(text), 16)
        found = (_code_of(m.group(1), throttle_codes) for m in codes)
        return BodyReading(throttled=any(code is not None for code in found))
    return NOTHING


def body_text(body: object) -> str | None:
    """A body under :data:`MAX_BODY_BYTES` as text (bytes decoded leniently), else None."""
    if isinstance(body, (bytes, str)) and len(body) < MAX_BODY_BYTES:
        return body.decode("utf-8-sig", "replace") if isinstance(body, bytes) else body
    return None


def _words(body: object) -> str:
    """The head of a body's text that its wording is read in (a decoded document's strings;
    empty when it has none or is too large to read)."""
    text = " ".join(_strings(body)) if isinstance(body, Mapping) else body_text(body)
    return (text or "")[:_MAX_WORDING_CHARS]


def mentions_rate_limit(body: object) -> bool:
    """Whether the body speaks of a rate limit (GitHub's secondary-limit 403)."""
    return _RATE_LIMIT_WORDING.search(_words(body)) is not None


def wait_in_words(body: object, now: float) -> float | None:
    """The wait a body's text states in words (see the module), seconds from ``now`` (a
    time already past: below 0), else None."""
    found = _WAIT_WORDS.search(_words(body))
    if found is None:
        return None
    if found["at"] is not None:
        moment = timestamp(found["at"])
        return None if moment is None else moment - now
    if found["span"] is not None:
        return duration(found["span"].lower())
    return float(found["number"]) * _WORD_SECONDS[found["unit"][:3].lower()]


def _read_json(
    document: object,
    throttle_codes: Collection[str],
    wait_fields: tuple[str, ...],
    paths: Mapping[str, tuple[str, ...]],
    now: float,
    refusal_codes: Collection[str] = (),
) -> BodyReading:
    throttled, wait, refused = False, None, None
    for key, value, erring in _pairs(document):
        lowered = key.lower()
        if erring and (throttle_codes or refusal_codes) and lowered in _REFUSAL_KEYS:
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if isinstance(value, str):
                if lowered in _CODE_KEYS:
                    throttled = throttled or _code_of(value, throttle_codes) is not None
                refused = refused or _code_of(value, refusal_codes)
        if wait is None and key in wait_fields:
            wait = _seconds(value)
    figures = {}
    for role, keys in paths.items():
        figure = _figure(_at(document, keys), now if role == "reset" else None)
        if figure is not None:
            figures[role] = figure
    return BodyReading(throttled, wait, figures, refused)


def _at(document: object, keys: tuple[str, ...]) -> object:
    """The value at ``keys`` through nested objects, else None."""
    for key in keys:
        if not isinstance(document, Mapping):
            return None
        document = document.get(key)
    return document


def _figure(value: object, now: float | None) -> float | None:
    """A finite number >= 0; with ``now``, a reset (a timestamp or delta) as seconds from
    ``now``."""
    if isinstance(value, str) and now is not None:
        return reset_delay(value.strip()[:64], now)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    number = float(min(value, 10**300)) if isinstance(value, int) else value
    if not math.isfinite(number) or number < 0:
        return None
    if now is not None and number >= 1e12:  # a reset: epoch ms, epoch s or delta s
        return number / 1000.0 - now
    if now is not None and number >= 1e9:
        return number - now
    return number


def _pairs(document: object) -> Iterator[tuple[str, object, bool]]:
    """(key, value, in an error) of every object member, breadth first, bounded in depth and
    count. A member is in an error when it sits at the top of the document (or of one of its
    top-level list items) or anywhere below a key named ``error`` or ``errors`` that is
    itself in an error: a code in a GraphQL answer's ``data`` (a merchant's discount code)
    is not an error's code, nor is an ``error`` object a successful answer carries in its
    payload (a Slack message's metadata)."""
    # each node: (value, its members are in an error, its subtree is below an error key)
    level: list[tuple[object, bool, bool]] = [(document, True, False)]
    seen = 0
    for _ in range(_MAX_DEPTH):
        deeper: list[tuple[object, bool, bool]] = []
        for node, matched, below in level:
            if isinstance(node, Mapping):
                for key, value in node.items():
                    seen += 1
                    if seen > _MAX_NODES:
                        return
                    if not isinstance(key, str):
                        continue
                    yield key, value, matched
                    inside = below or (matched and key.lower() in _ERRORS)
                    deeper.append((value, inside, inside))
            elif isinstance(node, list):
                for value in node[:_MAX_NODES]:
                    seen += 1
                    if seen > _MAX_NODES:
                        return
                    deeper.append((value, matched, below))
        if not deeper:
            return
        level = deeper


def _code_of(value: str, codes: Collection[str]) -> str | None:
    """Which of ``codes`` ``value`` states (as it is, after an AWS ``#``, before a Dropbox
    ``/``), or None."""
    value = value.strip()[:256]
    after_hash = value.rpartition("#")[2]  # AWS: "com.amazon.coral...#ThrottlingException"
    before_slash = value.partition("/")[0]  # Dropbox: "too_many_requests/..."
    for form in (value, after_hash, before_slash):
        if form in codes:
            return form
    return None


def _seconds(value: object) -> float | None:
    """A wait from a body value: seconds (a number or a decimal string) or a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value if value >= 0 else None  # NaN fails the test too
    if isinstance(value, int):
        return float(min(value, 10**300)) if value >= 0 else None  # no OverflowError
    if isinstance(value, str):
        text = value.strip()[:64]
        return decimal(text) if decimal(text) is not None else duration(text)
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

"""The grammar of rate-limit header values: lenient, total, cheap.

Internal to the header readers (:mod:`queue_ratelimit.policy.signals_headers`) and the body
reader: every function turns text into a number, a pair or a structured field's members, or
``None``; none raises, and none looks at more than a bounded prefix of its input.

Times come out as raw seconds relative to ``now`` (a reset in the past is negative);
clamping them to ``[0, max_backoff]`` is the caller's single step.
"""

from __future__ import annotations

import email.utils
import re
from datetime import datetime, timezone

__all__ = [
    "count",
    "decimal",
    "duration",
    "is_true",
    "policy_name",
    "reset_delay",
    "retry_delay",
    "sf_members",
    "timestamp",
    "used_of",
]

MAX_MEMBERS = 16
"""Members of a structured field read at most (each a named quota)."""
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
_FRACTION = re.compile(r"(?<=:[0-9]{2})\.([0-9]{1,30})")
_USED_OF = re.compile(r"([0-9]{1,18})\s*/\s*([0-9]{1,18})")
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
    # and a second's fraction of 3 or 6 digits only (Anthropic's resets carry 9: nanoseconds)
    text = _FRACTION.sub(lambda found: "." + found[1][:6].ljust(6, "0"), text, count=1)
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


def reset_delay(text: str, now: float, unit: str = "auto") -> float | None:
    """Return seconds from ``now`` until a reset given as a number, duration or timestamp.

    A number is told apart by magnitude: ``>= 1e12`` is epoch milliseconds, ``>= 1e9``
    epoch seconds, anything smaller delta seconds (delta milliseconds with ``unit="ms"``;
    ``unit="s"`` reads every number as delta seconds).
    """
    number = decimal(text)
    if number is not None and unit != "auto":
        return number / 1000.0 if unit == "ms" else number
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
    for raw in _split_unquoted(text, ",")[:MAX_MEMBERS]:
        head, *params = _split_unquoted(raw, ";")
        pairs = (param.partition("=") for param in params)
        members.append((head.strip(), {k.strip().lower(): v.strip() for k, _, v in pairs}))
    return members or None


def policy_name(head: str) -> str | None:
    """Return the quota name for an IETF policy (``"default"`` or ``default``), else None."""
    match = _POLICY_NAME.fullmatch(head)
    if not match:
        return None
    name = re.sub(r"[^a-z0-9_]+", "_", (match.group(1) or match.group(2)).lower()).strip("_")
    return name[:32] or "default"

"""How one API states its limits beyond what every API shares: a dialect, data not code.

The generic parser (:func:`~queue_ratelimit.parse_rate_limit`) reads the headers most APIs
send and backs off on 429 and 503. A :class:`Dialect` adds what one vendor does its own way:

* ``backoff_statuses``: statuses that are a backoff whatever the body says (Anthropic's
  ``529 overloaded_error``);
* ``body_statuses`` and ``throttle_codes``: statuses whose body is read for a throttle stated
  there, and the error codes that mean one (a GraphQL API answering ``200`` with
  ``errors[].extensions.code == "THROTTLED"``, AWS answering ``400`` with
  ``ThrottlingException``, Salesforce ``403`` with ``REQUEST_LIMIT_EXCEEDED``);
* ``wording``: whether rate-limit wording in a body ("rate limit", "too many requests")
  is evidence that a listed status such as a 403 is a throttle; by default only for a
  dialect with no ``throttle_codes`` (AWS names a field ``throttlingBurstLimit`` in its
  validation errors), ``True`` for an API that states some throttles by code and others
  only in words (GitHub GraphQL's secondary limits);
* ``resource_header`` and ``resources``: the header naming which of the API's limits an
  answer's quota headers describe, and the names that are this integration's (GitHub's
  ``x-ratelimit-resource``: ``core`` for REST, ``search``, ``graphql``); an answer naming
  another resource publishes no quota here (its ``remaining`` is another limit's). With
  ``resources`` empty, an answer carrying the header never does (Discord's per-route
  buckets, named by ``X-RateLimit-Bucket``);
* ``refusal_codes``: error codes that refuse the call for a reason waiting will not mend: a
  spent credit balance or plan quota (OpenAI's ``429 insufficient_quota``). Such an answer is
  no backoff (the rate is not cut, the call not retried): it is a failure, which the breaker
  counts, and the HTTP clients raise :class:`~queue_ratelimit.errors.QuotaSpent`. A
  tenant's refusal is that tenant's (its account or key is spent) and the breaker does not
  count it, unless its code is one of ``app_refusals``: a quota of the whole application
  (YouTube's project-wide day of units), which the breaker counts whoever met it;
* ``contention_codes``: error codes that say one object the call touches is busy or has a
  limit of its own, not the API's rate (Stripe's ``429 lock_timeout``, its
  ``resource-specific`` limits): no backoff (the rate is not cut, no cooldown opens, the
  breaker counts nothing); the HTTP clients raise
  :class:`~queue_ratelimit.errors.RateLimited` with the reason ``contention``, so a task
  is requeued to try again later (the stated wait, else
  :data:`~queue_ratelimit.errors.CONTENTION_WAIT`), spending its requeue budget;
* ``wait_fields``: JSON keys whose value is the wait a throttled body states (seconds, or a
  duration such as Google's ``"retryDelay": "30s"``);
* ``headers``: header names this API uses for a quota's fields (``{"X-Points-Left":
  "points.remaining"}``), what the smartratelimit seed calls ``headers_map``;
* ``reset_unit``: ``"ms"`` when the API's reset headers count milliseconds;
* ``default_wait``: the wait the vendor's documentation asks for when a backoff states none
  (GitHub's secondary limits: "wait at least one minute");
* ``cost_quota`` and ``cost_fields``: a points budget stated in the body (a GraphQL cost),
  by where each figure sits in the JSON: ``{"actual":
  "extensions.cost.actualQueryCost", "remaining":
  "extensions.cost.throttleStatus.currentlyAvailable", ...}``; the roles are
  :data:`COST_ROLES`. The budget becomes the quota ``cost_quota`` (its reset: the time to
  restore what is spent, or a stated ``reset``), and the actual cost corrects the estimate
  the call was charged.

Built-in integrations carry their vendor's dialect; a user declares one for their own API in
the integration's config (a ``dialect`` table in TOML/JSON, see ``docs/dialects.md``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, NoReturn

from queue_ratelimit.errors import ConfigError

__all__ = ["COST_ROLES", "GENERIC", "HEADER_FIELDS", "RESET_UNITS", "Dialect"]

COST_ROLES = ("requested", "actual", "limit", "remaining", "restore_rate", "reset")
"""What ``Dialect.cost_fields`` may locate: the call's requested and actual cost, the budget's
limit and what remains, its restore rate (points per second) or its reset (a timestamp or
delta seconds)."""

HEADER_FIELDS = (
    "limit", "remaining", "used", "reset", "retry_after", "retry_after_ms", "cost", "code",
)  # fmt: skip
"""What a header in ``Dialect.headers`` may carry, optionally after a quota name and a dot
(``cost``: what the call actually cost, like Linear's ``X-Complexity``; ``code``: an error
code, a throttle when it is one of ``throttle_codes``, like AWS's ``x-amzn-ErrorType``)."""

RESET_UNITS = ("auto", "s", "ms")
"""How reset values are read: by magnitude (``auto``), or as delta seconds or milliseconds."""

_CODE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
_QUOTA = re.compile(r"[a-z][a-z0-9_]{0,31}")
_WAIT_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}(?:\.[A-Za-z_][A-Za-z0-9_-]{0,63}){0,7}")
_MAX_ITEMS = 64


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Dialect:
    """How one API states its limits, beyond the generic parser (see the module docstring).

    Every field is optional; the default instance (:data:`GENERIC`) adds nothing. Validated
    at construction: :class:`~queue_ratelimit.errors.ConfigError` names the field.
    """

    backoff_statuses: frozenset[int] = frozenset()
    body_statuses: frozenset[int] = frozenset()
    throttle_codes: frozenset[str] = frozenset()
    wait_fields: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=_empty, hash=False)
    reset_unit: str = "auto"
    default_wait: float | None = None
    cost_quota: str = "points"
    cost_fields: Mapping[str, str] = field(default_factory=_empty, hash=False)
    refusal_codes: frozenset[str] = frozenset()
    wording: bool | None = None
    resource_header: str | None = None
    resources: frozenset[str] = frozenset()
    app_refusals: frozenset[str] = frozenset()
    contention_codes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "backoff_statuses", _statuses("backoff_statuses", self.backoff_statuses))
        set_(self, "body_statuses", _statuses("body_statuses", self.body_statuses))
        set_(self, "throttle_codes", frozenset(_words("throttle_codes", self.throttle_codes)))
        set_(self, "refusal_codes", frozenset(_words("refusal_codes", self.refusal_codes)))
        if self.throttle_codes & self.refusal_codes:
            both = sorted(self.throttle_codes & self.refusal_codes)
            _fail("refusal_codes", both, "a code is a throttle or a refusal, not both")
        set_(self, "app_refusals", frozenset(_words("app_refusals", self.app_refusals)))
        if not self.app_refusals <= self.refusal_codes:
            only = sorted(self.app_refusals - self.refusal_codes)
            _fail("app_refusals", only, "each must be one of refusal_codes too")
        contention = frozenset(_words("contention_codes", self.contention_codes))
        set_(self, "contention_codes", contention)
        if contention & (self.throttle_codes | self.refusal_codes):
            both = sorted(contention & (self.throttle_codes | self.refusal_codes))
            _fail("contention_codes", both, "a code is a throttle, a refusal or a contention")
        set_(self, "wait_fields", tuple(_words("wait_fields", self.wait_fields, _WAIT_FIELD)))
        set_(self, "headers", _header_map(self.headers))
        if self.reset_unit not in RESET_UNITS:
            _fail("reset_unit", self.reset_unit, f"must be one of {', '.join(RESET_UNITS)}")
        if self.default_wait is not None:
            wait = self.default_wait
            if isinstance(wait, bool) or not isinstance(wait, (int, float)):
                _fail("default_wait", wait, "must be a number of seconds")
            if not (math.isfinite(wait) and wait >= 0):
                _fail("default_wait", wait, "must be a finite number >= 0")
            set_(self, "default_wait", float(wait))
        if not isinstance(self.cost_quota, str) or not _QUOTA.fullmatch(self.cost_quota):
            _fail("cost_quota", self.cost_quota, "must be a quota name: [a-z][a-z0-9_]*")
        set_(self, "cost_fields", _cost_fields(self.cost_fields))
        if self.wording is not None and not isinstance(self.wording, bool):
            _fail("wording", self.wording, "must be true, false or unset")
        header = self.resource_header
        if header is not None:
            if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
                _fail("resource_header", header, "is not a header name")
            set_(self, "resource_header", header.lower())
        set_(self, "resources", frozenset(_words("resources", self.resources)))
        if self.resources and header is None:
            _fail("resources", sorted(self.resources), "needs a resource_header to read them")

    @property
    def reads_wording(self) -> bool:
        """Whether rate-limit wording counts as evidence (``wording``, else: no codes)."""
        return not self.throttle_codes if self.wording is None else self.wording

    def cost_paths(self) -> dict[str, tuple[str, ...]]:
        """``cost_fields`` split into keys: ``{"actual": ("extensions", "cost", ...)}``."""
        return {role: tuple(path.split(".")) for role, path in self.cost_fields.items()}

    @classmethod
    def from_mapping(cls, data: object, integration: str | None = None) -> Dialect:
        """Build a dialect from a parsed TOML table or JSON object.

        Raises:
            ConfigError: a key is not a field, or a value is invalid (named
                ``dialect.<field>``, with ``integration`` when given).
        """
        if isinstance(data, Dialect):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(integration, "dialect", data, "must be a table of dialect fields")
        allowed = [f.name for f in fields(cls)]
        for key, value in data.items():
            if key not in allowed:
                reason = f"unknown field; allowed: {', '.join(allowed)}"
                raise ConfigError(integration, f"dialect.{key}", value, reason)
        try:
            return cls(**dict(data))
        except ConfigError as exc:
            raise ConfigError(integration, exc.field, exc.value, exc.reason) from None

    def __reduce__(self) -> tuple[Any, tuple[dict[str, object]]]:
        """Pickled as its fields (a config crosses to spawned worker processes)."""
        return (Dialect.from_mapping, (self.to_dict(),))

    def to_dict(self) -> dict[str, object]:
        """The fields, JSON-friendly, shaped like a ``dialect`` table (round-trips); the
        fields added after 0.1.0 (refusals, contention, wording, resources) only when set, so that a
        process of 0.1.0 still reads a dialect that does not use them."""
        data: dict[str, object] = {
            "backoff_statuses": sorted(self.backoff_statuses),
            "body_statuses": sorted(self.body_statuses),
            "throttle_codes": sorted(self.throttle_codes),
            "wait_fields": list(self.wait_fields),
            "headers": dict(self.headers),
            "reset_unit": self.reset_unit,
            "default_wait": self.default_wait,
            "cost_quota": self.cost_quota,
            "cost_fields": dict(self.cost_fields),
        }
        if self.refusal_codes:
            data["refusal_codes"] = sorted(self.refusal_codes)
        if self.app_refusals:
            data["app_refusals"] = sorted(self.app_refusals)
        if self.contention_codes:
            data["contention_codes"] = sorted(self.contention_codes)
        if self.wording is not None:
            data["wording"] = self.wording
        if self.resource_header is not None:
            data["resource_header"] = self.resource_header
            data["resources"] = sorted(self.resources)
        return data


def _fail(name: str, value: object, reason: str) -> NoReturn:
    raise ConfigError(None, f"dialect.{name}", value, reason)


def _items(name: str, value: object) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        _fail(name, value, "must be a list")
    items = list(value)
    if len(items) > _MAX_ITEMS:
        _fail(name, value, f"must have at most {_MAX_ITEMS} items")
    return items


def _statuses(name: str, value: object) -> frozenset[int]:
    codes = _items(name, value)
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            _fail(name, value, f"{code!r} is not an HTTP status code (an integer in 100..599)")
    return frozenset(codes)


def _words(name: str, value: object, grammar: re.Pattern[str] = _CODE) -> list[str]:
    words = _items(name, value)
    for word in words:
        if not isinstance(word, str) or not grammar.fullmatch(word):
            _fail(name, value, f"{word!r} is not a code of the form {grammar.pattern}")
    return words


def _header_map(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        _fail("headers", value, "must map header names to fields")
    if len(value) > _MAX_ITEMS:
        _fail("headers", value, f"must have at most {_MAX_ITEMS} headers")
    mapped: dict[str, str] = {}
    for header, target in value.items():
        if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
            _fail("headers", header, "is not a header name")
        quota, _, what = target.rpartition(".") if isinstance(target, str) else ("", "", "")
        if what not in HEADER_FIELDS or (quota and not _QUOTA.fullmatch(quota)):
            reason = f"must be one of {', '.join(HEADER_FIELDS)}, optionally after 'quota.'"
            _fail(f"headers.{header}", target, reason)
        mapped[header.lower()] = target
    return MappingProxyType(mapped)


def _cost_fields(value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        _fail("cost_fields", value, "must map roles to JSON paths")
    for role, path in value.items():
        if role not in COST_ROLES:
            _fail(f"cost_fields.{role}", path, f"unknown role; allowed: {', '.join(COST_ROLES)}")
        if not isinstance(path, str) or not _PATH.fullmatch(path):
            _fail(f"cost_fields.{role}", path, "must be a dotted JSON path (a.b.c)")
    return MappingProxyType(dict(value))


GENERIC = Dialect()
"""The dialect of an API nobody described: the generic parser alone."""

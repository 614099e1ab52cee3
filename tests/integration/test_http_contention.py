"""An answer saying one object is busy (Stripe's ``429 lock_timeout``, its
``Stripe-Rate-Limited-Reason: resource-specific``) is no throttle of the account: the
clients raise ``RateLimited`` with the reason ``contention``, the rate is not cut, no
cooldown opens, the breaker counts nothing; the account's own 429 (``global-rate``) still
backs off. Against a real local server answering as Stripe documents it, with the built-in
``stripe`` config."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import httpx
import pytest
import requests

from queue_ratelimit import BUILTIN_INTEGRATIONS, Limiter, RateLimited
from queue_ratelimit.errors import CONTENTION, CONTENTION_WAIT
from queue_ratelimit.http import RateLimitedAdapter, RateLimitedTransport
from queue_ratelimit.policy.state import SUCCESS
from tests.support import send_json, serving

LOCKED = {
    "error": {
        "type": "invalid_request_error",
        "code": "lock_timeout",
        "message": "This object cannot be accessed right now because another API request or "
        "Stripe process is currently accessing it.",
    }
}
LIMITED = {"error": {"type": "invalid_request_error", "code": "rate_limit"}}


class _Stripe(BaseHTTPRequestHandler):
    """``/v1/customers/<id>``: locked on its first call, then served; ``/v1/payment_intents/
    <id>``: at its own limit; ``/v1/charges``: the account's rate."""

    seen: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        headers = {"Request-Id": "req_1", "Stripe-Should-Retry": "true"}
        if self.path.startswith("/v1/customers/"):
            first = self.path not in self.seen
            self.seen.add(self.path)
            status, body = (429, LOCKED) if first else (200, {"id": self.path})
        elif self.path.startswith("/v1/payment_intents/"):
            status, body = 429, LIMITED
            headers["Stripe-Rate-Limited-Reason"] = "resource-specific"
        else:
            status, body = 429, LIMITED
            headers["Stripe-Rate-Limited-Reason"] = "global-rate"
        send_json(self, status, body, **headers)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serving(_Stripe) as url:
        yield url


def _limiter() -> Limiter:
    return Limiter(configs={"stripe": BUILTIN_INTEGRATIONS["stripe"]})


def _untouched(limiter: Limiter, rate: float) -> None:
    seen = limiter.snapshot("stripe")
    assert seen.cooldown_left == 0.0  # nothing to wait out
    assert seen.limit().rate >= rate  # the rate is not cut
    assert seen.breaker_failures == 0  # nor is it a failure
    assert seen.counts.get("backoffs", 0) == 0


def test_a_locked_object_raises_contention_and_cuts_nothing(upstream: str) -> None:
    limiter = _limiter()
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, "stripe"))
    rate = limiter.snapshot("stripe").limit().rate
    with pytest.raises(RateLimited) as caught:
        session.get(f"{upstream}/v1/customers/cus_1", timeout=5)
    assert (caught.value.reason, caught.value.retry_after) == (CONTENTION, CONTENTION_WAIT)
    assert caught.value.integration == "stripe"
    _untouched(limiter, rate)
    assert session.get(f"{upstream}/v1/customers/cus_1", timeout=5).status_code == 200


def test_retries_wait_a_contention_out(upstream: str) -> None:
    limiter = _limiter()
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, "stripe", retries=1))
    answer = session.get(f"{upstream}/v1/customers/cus_2", timeout=5)
    assert answer.status_code == 200  # the lock was waited out, the call made again
    _untouched(limiter, limiter.config("stripe").rate_limit_per_sec)


def test_an_objects_own_limit_is_contention_and_the_accounts_rate_a_backoff(
    upstream: str,
) -> None:
    limiter = _limiter()
    rate = limiter.config("stripe").rate_limit_per_sec
    with httpx.Client(transport=RateLimitedTransport(limiter, "stripe")) as client:
        with pytest.raises(RateLimited) as caught:
            client.get(f"{upstream}/v1/payment_intents/pi_1")
        assert caught.value.reason == CONTENTION
        _untouched(limiter, rate)
        with pytest.raises(RateLimited) as caught:
            client.get(f"{upstream}/v1/charges")
    assert caught.value.reason == "backoff"
    seen = limiter.snapshot("stripe")
    assert seen.limit().rate < rate  # the account's 429: cut
    assert seen.counts.get("backoffs", 0) == 1


def test_without_raising_the_answer_is_returned_and_named(upstream: str) -> None:
    limiter = _limiter()
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, "stripe", raise_on_backoff=False))
    assert session.get(f"{upstream}/v1/payment_intents/pi_2", timeout=5).status_code == 429
    answer = requests.get(f"{upstream}/v1/payment_intents/pi_2", timeout=5)
    outcome = limiter.report_response(
        "stripe", None, answer.status_code, answer.headers, answer.content
    )
    assert (outcome.kind, outcome.info.contended, outcome.info.backoff) == (
        SUCCESS,
        "resource-specific",
        False,
    )

"""An answer that refuses for good (a spent credit: OpenAI's ``429 insufficient_quota``) is
no throttle: the clients raise ``QuotaSpent`` instead of ``RateLimited``, the rate is not
cut, no cooldown opens, and the breaker counts it, so repeated refusals pause the
integration. Against a real local server answering as OpenAI documents it."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
import requests

from queue_ratelimit import BUILTIN_INTEGRATIONS, Dialect, Limiter, QuotaSpent, RateLimited
from queue_ratelimit.http import RateLimitedAdapter, RateLimitedTransport
from queue_ratelimit.policy.state import FAILURE
from tests.support import send_json, serving

OPENAI = BUILTIN_INTEGRATIONS["openai"].replace(breaker_failure_threshold=3)
SPENT = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
THROTTLED = {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}


class _Answers(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        send_json(self, 429, THROTTLED if self.path.startswith("/throttled") else SPENT)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serving(_Answers) as url:
        yield url


def _limiter() -> Limiter:
    return Limiter(configs={"openai": OPENAI})


def test_requests_raises_quota_spent_and_the_breaker_counts_it(upstream: str) -> None:
    limiter = _limiter()
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, "openai"))
    rate = limiter.snapshot("openai").limit().rate
    for count in (1, 2):
        with pytest.raises(QuotaSpent) as caught:
            session.get(f"{upstream}/v1/chat/completions", timeout=5)
        assert (caught.value.integration, caught.value.code) == ("openai", "insufficient_quota")
        assert caught.value.status == 429
        assert "insufficient_quota" in str(caught.value)
        seen = limiter.snapshot("openai")
        assert seen.breaker_failures == count
        assert seen.cooldown_left == 0.0  # no backoff: nothing to wait out
        assert seen.limit().rate == rate  # and the rate is not cut
    with pytest.raises(QuotaSpent):
        session.get(f"{upstream}/v1/chat/completions", timeout=5)
    assert limiter.snapshot("openai").breaker == "open"  # the third: the integration pauses


def test_httpx_raises_quota_spent(upstream: str) -> None:
    limiter = _limiter()
    transport = RateLimitedTransport(limiter, "openai")
    with httpx.Client(transport=transport) as client, pytest.raises(QuotaSpent) as caught:
        client.get(f"{upstream}/v1/embeddings")
    assert caught.value.code == "insufficient_quota"
    assert limiter.snapshot("openai").breaker_failures == 1


def test_a_throttle_on_the_same_status_is_still_a_backoff(upstream: str) -> None:
    limiter = _limiter()
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, "openai"))
    with pytest.raises(RateLimited):
        session.get(f"{upstream}/throttled", timeout=5)
    assert limiter.snapshot("openai").breaker_failures == 0


def test_without_raising_the_answer_is_returned_as_a_failure(upstream: str) -> None:
    limiter = _limiter()
    answer = requests.get(f"{upstream}/v1/models", timeout=5)
    outcome = limiter.report_response(
        "openai", None, answer.status_code, answer.headers, answer.content
    )
    assert (outcome.kind, outcome.info.refused, outcome.info.backoff) == (
        FAILURE,
        "insufficient_quota",
        False,
    )
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, "openai", raise_on_backoff=False))
    assert session.get(f"{upstream}/v1/models", timeout=5).status_code == 429


def test_a_tenants_refusal_is_its_own_and_pauses_no_one(upstream: str) -> None:
    limiter = _limiter()
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, "openai", tenant="acme"))
    for _ in range(OPENAI.breaker_failure_threshold + 1):
        with pytest.raises(QuotaSpent):
            session.get(f"{upstream}/v1/chat/completions", timeout=5)
    assert limiter.snapshot("openai").breaker == "closed"  # every tenant's: not counted
    assert limiter.snapshot("openai", "acme").cooldown_left == 0.0
    assert limiter.acquire("openai", "globex").granted  # another tenant goes on


def test_a_refusal_of_the_whole_applications_quota_counts_whoever_met_it(upstream: str) -> None:
    # a quota the dialect names in app_refusals (YouTube's project-wide day of units) is
    # every tenant's: a tenant's call that meets it counts for the breaker too
    whole = OPENAI.dialect.to_dict() | {"app_refusals": ["insufficient_quota"]}
    config = OPENAI.replace(dialect=Dialect.from_mapping(whole))
    limiter = Limiter(configs={"openai": config})
    session = requests.Session()
    session.mount("http://", RateLimitedAdapter(limiter, "openai", tenant="acme"))
    for _ in range(OPENAI.breaker_failure_threshold):
        with pytest.raises(QuotaSpent):
            session.get(f"{upstream}/v1/chat/completions", timeout=5)
    assert limiter.snapshot("openai").breaker == "open"  # paused for every tenant
    assert not limiter.acquire("openai", "globex").granted

"""OpenAI with Dramatiq: two limits, requests and tokens per minute, granted together.

OpenAI limits each key per model in requests (RPM) and tokens (TPM). The built-in
``openai`` config has its ``requests`` limit plus a ``tokens`` ``LimitConfig``. The actor's
``cost`` option estimates what a message spends (one request and the prompt's tokens plus
the longest answer allowed); ``RateLimitMiddleware`` acquires both before the body runs, or
sends the message back to the broker until they refill. The body's call goes through
``RateLimitedAdapter`` with a ``usage`` function: the tokens the answer says it used
correct the estimate (the difference is refunded or charged), and a 429 requeues the
message after its ``Retry-After``.

Real API: ``OPENAI_API_KEY=sk-... python examples/openai_dramatiq.py`` asks
``OPENAI_MODEL`` (default gpt-4o-mini) for 20 short summaries at the built-in limits.

Without ``OPENAI_API_KEY``: the calls go to a local upstream that allows 20 calls/s,
publishes ``X-RateLimit-*`` quotas, and reports each call's token usage as an LLM API does;
the local ``tokens`` limit is small enough that tokens, not requests, pace the run.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import requests
from _support import Api, Tally, configs_for, dramatiq_worker, open_api, report
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from queue_ratelimit import Limiter, MemoryBackend
from queue_ratelimit.http import RateLimitedAdapter
from queue_ratelimit.integrations.dramatiq import RateLimitMiddleware

CHAT_URL = "https://api.openai.com/v1/chat/completions"
MAX_COMPLETION_TOKENS = 200
TASKS = 20
LOCAL = {  # requests: 15/s and more; tokens: 600 at once, then 1,200/s (~7 calls/s)
    "rate_limit_per_sec": 15.0,
    "increase_factor": 1.0,
    "max_rate": 40.0,
    "limits": {"tokens": {"rate_limit_per_sec": 1200.0, "burst_size": 600.0, "max_rate": 1200.0}},
}


def estimate_tokens(prompt: str) -> float:
    """A rough estimate: ~4 characters per token, plus the longest answer allowed."""
    return len(prompt) / 4 + MAX_COMPLETION_TOKENS


def tokens_used(answer: requests.Response) -> dict[str, float] | None:
    """What the answer says the call spent (read from successful answers only)."""
    used = answer.json().get("usage", {}).get("total_tokens")
    return {"tokens": float(used)} if used is not None else None


def chat_body(prompt: str) -> dict[str, Any]:
    return {
        "model": os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_COMPLETION_TOKENS,
    }


def make_broker(limiter: Limiter, session: requests.Session) -> tuple[StubBroker, Any]:
    """The broker with its middleware, and the actor (declared after the middleware)."""
    broker = StubBroker()
    broker.add_middleware(RateLimitMiddleware(limiter))
    broker.add_middleware(Results(backend=StubBackend()))
    dramatiq.set_broker(broker)

    @dramatiq.actor(
        queue_name="openai",
        integration="openai",
        store_results=True,
        cost=lambda doc, prompt, url: {"tokens": estimate_tokens(prompt)},  # paid up front
    )
    def summarise(doc: str, prompt: str, url: str) -> str:
        session.post(url, json=chat_body(prompt), timeout=60).raise_for_status()
        return doc

    return broker, summarise


def documents(api: Api) -> list[tuple[str, str, str]]:
    """(document, prompt, URL to call) for each message."""
    prompts = [(f"doc-{n}", f"Summarise document {n} in one sentence.") for n in range(TASKS)]
    if not api.local:
        return [(doc, prompt, CHAT_URL) for doc, prompt in prompts]
    # the local upstream answers {"usage": {"total_tokens": N}} for ?tokens=N
    used = {doc: int(estimate_tokens(prompt) * 0.8) for doc, prompt in prompts}
    return [
        (doc, prompt, api.local_url("openai", doc, f"tokens={used[doc]}"))
        for doc, prompt in prompts
    ]


def main() -> int:
    token = os.environ.get("OPENAI_API_KEY")
    with open_api(token, hidden_limit=20, dialect="x-ratelimit") as api:
        limiter = Limiter(MemoryBackend(), configs_for(api, "openai", LOCAL))
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {api.token}"
        adapter = RateLimitedAdapter(limiter, "openai", usage=tokens_used)
        session.mount(api.prefix("https://api.openai.com/"), adapter)
        broker, summarise = make_broker(limiter, session)
        work = documents(api)
        with Tally("openai") as tally, dramatiq_worker(broker):
            messages = [summarise.send(*args) for args in work]
            done = [message.get_result(block=True, timeout=60_000) for message in messages]
        return report("openai_dramatiq", [doc for doc, _, _ in work], done, tally, api)


if __name__ == "__main__":
    raise SystemExit(main())

"""An API token from the OS keyring, not from the source or the environment; Dramatiq + httpx.

The Notion token is read with ``keyring.get_password`` (macOS Keychain, Windows Credential
Locker, the Secret Service on Linux; ``pip install keyring``). Store it once with keyring's
own command, which prompts for it so it never reaches your shell history::

    keyring set queue-ratelimit-examples notion

The actor's limit is keyed by a digest of the token (``token_tenant``, the same key the
``BY_TOKEN`` tenant of the httpx ``RateLimitedTransport`` computes), so each token gets its
own limit while the token itself never reaches Redis, signals, logs or exceptions. A real
Dramatiq worker runs in this process on Dramatiq's in-memory ``StubBroker``.

Real API: with a token in the keyring, ``python examples/keyring_token.py`` reads the
token's bot user (``GET /v1/users/me``) 20 times at the built-in ``notion`` limit (about
3 requests/s). ``PYTHON_KEYRING_BACKEND`` chooses another keyring backend.

Without a token in the keyring, or with no usable keyring at all: the calls go to a local
upstream that allows 12 calls/s and answers 429 with ``Retry-After``, as Notion does.
"""

from __future__ import annotations

import sys
from typing import Any

import dramatiq
import httpx
import keyring
from _support import Api, Tally, configs_for, dramatiq_worker, open_api, report
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend
from keyring.errors import KeyringError

from queue_ratelimit import Limiter, MemoryBackend
from queue_ratelimit.http import BY_TOKEN, RateLimitedTransport, token_tenant
from queue_ratelimit.integrations.dramatiq import RateLimitMiddleware

KEYRING_SERVICE = "queue-ratelimit-examples"
KEYRING_USERNAME = "notion"
NOTION_API = "https://api.notion.com/v1"
TASKS = 20
LOCAL = {"rate_limit_per_sec": 8.0, "increase_factor": 1.0, "max_rate": 40.0}


def token_from_keyring() -> str | None:
    """The Notion token stored in the OS keyring; None when there is none (or no keyring)."""
    try:
        return keyring.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
    except KeyringError as exc:  # e.g. NoKeyringError: no backend usable on this machine
        print(f"keyring unavailable ({type(exc).__name__}): running locally", file=sys.stderr)
        return None


def make_broker(
    limiter: Limiter, notion: httpx.Client, tenant: str | None
) -> tuple[StubBroker, Any]:
    """The broker with its middleware, and the actor (declared after the middleware)."""
    broker = StubBroker()
    broker.add_middleware(RateLimitMiddleware(limiter))
    broker.add_middleware(Results(backend=StubBackend()))
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="notion", integration="notion", tenant=tenant, store_results=True)
    def read_bot_user(key: str, url: str) -> str:
        notion.get(url).raise_for_status()  # a 429 requeues the message
        return key

    return broker, read_bot_user


def reads(api: Api) -> list[tuple[str, str]]:
    """(key, URL to read) for each message."""
    if api.local:
        return [(f"me-{n}", api.local_url("notion", f"me-{n}")) for n in range(TASKS)]
    return [(f"me-{n}", f"{NOTION_API}/users/me") for n in range(TASKS)]


def main() -> int:
    with open_api(token_from_keyring(), hidden_limit=12, dialect="retry-after") as api:
        limiter = Limiter(MemoryBackend(), configs_for(api, "notion", LOCAL))
        authorization = f"Bearer {api.token}"
        notion = httpx.Client(
            transport=RateLimitedTransport(limiter, "notion", tenant=BY_TOKEN),
            headers={"Authorization": authorization, "Notion-Version": "2022-06-28"},
            timeout=10,
        )
        broker, read_bot_user = make_broker(limiter, notion, token_tenant(authorization))
        work = reads(api)
        with notion, Tally("notion") as tally, dramatiq_worker(broker):
            messages = [read_bot_user.send(*args) for args in work]
            done = [message.get_result(block=True, timeout=60_000) for message in messages]
        return report("keyring_token", [key for key, _ in work], done, tally, api)


if __name__ == "__main__":
    raise SystemExit(main())

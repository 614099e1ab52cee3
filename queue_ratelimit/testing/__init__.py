"""A real local HTTP upstream that enforces a hidden rate limit: test your tasks against it.

``HiddenLimitUpstream`` is a threaded HTTP server on 127.0.0.1 (a free port) that behaves like
a rate-limited SaaS API. Every ``GET``/``POST`` to ``/<bucket>/<call-id>`` counts against the
limit of ``<bucket>`` (``limit`` calls per ``window`` seconds); beyond it the server answers
429 with ``Retry-After``. It counts what it served per call id, so a test can assert that
every task ran exactly once::

    with HiddenLimitUpstream(limit=10, window=1.0, headers="retry-after") as upstream:
        run_my_tasks(base_url=upstream.url)
        assert upstream.served_once(expected_ids)

``headers`` chooses the dialect: ``"retry-after"`` (429 + ``Retry-After`` only),
``"x-ratelimit"`` or its alias ``"github"`` (also ``X-RateLimit-Limit/-Remaining/-Reset``
on every answer, Reset in epoch seconds, as GitHub sends them), ``"ietf"`` (the IETF
``RateLimit-Limit/-Remaining/-Reset`` fields, Reset in delta seconds, plus
``RateLimit-Policy``), ``"none"`` (a bare 429), or ``"graphql-cost"`` (a GraphQL points
budget of ``limit`` points restoring ``limit / window`` per second, a call costing
``?cost=N``: see ``queue_ratelimit.testing.cost``). The quota dialects count a fixed
window. A call with ``?tokens=N`` is answered with ``{"usage": {"total_tokens": N}}``,
like an LLM API reporting what a call really cost.
``set_limit`` changes the limit mid-run; ``fail_with(500)`` makes every call fail (for the
breaker); ``require_token`` checks ``Authorization: Bearer <token>``. Nothing is logged (a
token never reaches a log).

Standalone, for a demo or a compose stack, it serves until interrupted (Ctrl-C or SIGTERM)::

    python -m queue_ratelimit.testing --host 0.0.0.0 --port 8080 --limit 20 --dialect retry-after
"""

from queue_ratelimit.testing.cli import main
from queue_ratelimit.testing.upstream import DIALECTS, HiddenLimitUpstream

__all__ = ["DIALECTS", "HiddenLimitUpstream", "main"]

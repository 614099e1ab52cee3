"""The README is the front door: its commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = next(c for c in _commands() if "pytest" in c)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_readme_links_point_at_files() -> None:
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert (ROOT / target).exists(), target


def test_the_celery_example_builds() -> None:
    source = next(c for c in re.findall(r"```python\n(.+?)\n```", _text(), re.S) if "Celery" in c)
    namespace: dict[str, object] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    app = namespace["app"]
    assert "SyncNotion" in type(namespace["sync_notion"]).__name__
    from queue_ratelimit.backends.redis import RedisBackend
    from queue_ratelimit.integrations.celery import limiter_for

    assert isinstance(limiter_for(app).backend, RedisBackend)  # type: ignore[arg-type]


def _text() -> str:
    return (ROOT / "README.md").read_text()

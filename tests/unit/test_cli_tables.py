"""The CLI's tables (cli_tables): ``top`` at 80 and 120 columns against snapshots kept in
``tests/unit/snapshots``, names shortened without ever colliding, three significant
digits, and debts shown as owed."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from queue_ratelimit import IntegrationConfig, Limiter, MemoryBackend
from queue_ratelimit.cli_tables import number, shorten, top_table
from queue_ratelimit.inspection import KeyState, activity, counts_by_key, read_keys, sort_keys
from tests.conftest import FakeClock

SNAPSHOTS = Path(__file__).parent / "snapshots"
TWINS = ("workspace-eu-0001-alpha", "workspace-eu-0001-bravo")  # a 12-character prefix and more


def _fleet() -> tuple[list[KeyState], dict[tuple[str, str | None], dict[str, float]]]:
    """Keys with fixed state on a fake clock: two tenants sharing a long prefix, one in
    debt to reservations, one cooling down, an integration-wide key, a second integration."""
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    configs = {
        name: IntegrationConfig(name=name, rate_limit_per_sec=4.0, burst_size=2.0, max_rate=40.0)
        for name in ("notion", "github-enterprise-cloud")
    }
    limiter = Limiter(backend, configs, sleep=clock.advance)
    for tenant in (*TWINS, "acme", None):
        limiter.acquire("notion", tenant)
    for _ in range(12):  # reservations put the bucket in debt
        limiter.acquire("notion", TWINS[0], max_wait=0.0)
    limiter.on_backoff("notion", TWINS[1], retry_after=12.0)
    limiter.acquire("github-enterprise-cloud", "octo-org")
    before = counts_by_key(read_keys(limiter, backend))
    for _ in range(3):
        limiter.count("notion", "requeues", TWINS[0])
    limiter.on_backoff("notion", "acme", retry_after=1.0)
    keys = read_keys(limiter, backend)
    return keys, activity(before, keys, 2.0)


@pytest.mark.parametrize("width", [80, 120])
def test_top_matches_its_snapshot_and_fits(width: int) -> None:
    keys, rates = _fleet()
    shown = sort_keys(keys, "requeues", rates)
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(top_table(shown, rates, width, sort="requeues"))
    text = console.export_text()
    lines = [line.rstrip() for line in text.splitlines()]
    assert max(map(len, lines)) <= width
    twins = [line for line in lines if "-alpha" in line or "-bravo" in line]
    assert len(twins) == 2 and twins[0].split()[1] != twins[1].split()[1]  # told apart
    assert "owed" in text  # the bucket in debt
    snapshot = SNAPSHOTS / f"top_{width}.txt"
    rendered = "\n".join(lines).rstrip() + "\n"
    if os.environ.get("QRL_UPDATE_SNAPSHOTS"):
        snapshot.write_text(rendered, encoding="utf-8")
    assert rendered == snapshot.read_text(encoding="utf-8"), (
        f"top at {width} columns changed; if intended: QRL_UPDATE_SNAPSHOTS=1 pytest {__file__}"
    )


def test_the_busiest_keys_come_first_by_each_sort() -> None:
    keys, rates = _fleet()
    assert sort_keys(keys, "requeues", rates)[0].tenant == TWINS[0]
    assert sort_keys(keys, "429s", rates)[0].tenant == "acme"
    assert sort_keys(keys, "owed", rates)[0].tenant == TWINS[0]
    assert sort_keys(keys, "name", rates) == keys
    with pytest.raises(ValueError, match="sort must be one of"):
        sort_keys(keys, "size", rates)


def test_names_are_shortened_by_their_tails_and_never_to_the_same_text() -> None:
    names = ["workspace-eu-0001-alpha-prod", "workspace-us-0001-alpha-prod", "short"]
    cut = shorten(names, 15)
    assert cut[2] == "short" and all(len(c) <= 15 for c in cut)
    assert len(set(cut)) == 3
    same_ends = ["a" * 20 + str(i) + "b" * 20 for i in range(50)]  # differ in the middle only
    assert len(set(shorten(same_ends, 12))) == 50
    assert shorten(["tenant-1", "tenant-2"], 20) == ["tenant-1", "tenant-2"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (5, "5.00"),
        (12.345, "12.3"),
        (0.012345, "0.0123"),
        (9.996, "10.0"),
        (999.6, "1,000"),
        (123456.7, "123,457"),
        (-42.07, "-42.1"),
    ],
)
def test_numbers_have_three_significant_digits(value: float, text: str) -> None:
    assert number(value) == text

"""``queue-ratelimit``: see and steer the fleet's shared limiter state from a terminal.

::

    queue-ratelimit status [INTEGRATION] [--json]       every limiter key in Redis
    queue-ratelimit top [INTEGRATION]                   the same, live, with requeues/s
    queue-ratelimit reset INTEGRATION [--tenant T]      forget a key's learned state
    queue-ratelimit breaker open|close INTEGRATION      an operator's override
    queue-ratelimit set INTEGRATION [--tenant T] ...    bound a rate at run time (unset)
    queue-ratelimit migrate                             a SQL store's tables
    queue-ratelimit config show | validate FILE         the merged configuration
    queue-ratelimit exporter [--port N]                 /metrics for Prometheus
    queue-ratelimit demo [--plot FILE.png]              the product, end to end, no server

Redis and configuration come from ``--redis`` / ``--prefix`` / ``--config`` or the
environment (``QUEUE_RATELIMIT_REDIS_URL``, ``QUEUE_RATELIMIT_PREFIX``,
``QUEUE_RATELIMIT_CONFIG``). Needs the ``cli`` extra (click, rich). The commands that
change the state are in ``cli_change.py``, what every command shares in ``cli_context.py``.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import click
from rich.console import Console

from queue_ratelimit.backends import (
    Backend,
    redacted,
)
from queue_ratelimit.cli_change import breaker, migrate, reset, set_override, unset_override
from queue_ratelimit.cli_context import Context, configs_from, explain
from queue_ratelimit.cli_tables import (
    key_text,
    override_text,
    status_table,
    top_table,
    with_override,
)
from queue_ratelimit.errors import BackendError, QueueRateLimitError
from queue_ratelimit.inspection import (
    SORTS,
    Activity,
    KeyState,
    known,
    read_keys,
    sort_keys,
    tool_plan,
)
from queue_ratelimit.limiter import Limiter
from queue_ratelimit.policy.state import Snapshot
from queue_ratelimit.registry import did_you_mean, load_json, load_toml, merge_configs

__all__ = ["main"]


@click.group()
@click.option(
    "--redis",
    "--store",
    "redis_url",
    envvar="QUEUE_RATELIMIT_REDIS_URL",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="The shared state: a Redis URL, postgresql://... or sqlite:///path for a SQLite file.",
)
@click.option(
    "--prefix",
    envvar="QUEUE_RATELIMIT_PREFIX",
    default="qrl",
    show_default=True,
    help="The key prefix the workers use.",
)
@click.option(
    "--config",
    envvar="QUEUE_RATELIMIT_CONFIG",
    default=None,
    help="A TOML or JSON file of integration overrides.",
)
@click.pass_context
def cli(ctx: click.Context, redis_url: str, prefix: str, config: str | None) -> None:
    """See and steer queue_ratelimit's shared limiter state."""
    ctx.obj = Context(redis_url, prefix, config)


_SORT = click.Choice(SORTS)


def _empty(obj: Context, backend: Backend, integration: str | None) -> str:
    """Why a listing is empty, and what to check."""
    what = f"no keys of {integration}" if integration else "no limiter keys"
    return (
        f"{what} in {backend.describe()}: workers write them at their first decision; "
        "check that they use this store and prefix (each worker names both in its start line)"
    )


@cli.command()
@click.argument("integration", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print every key as JSON, for scripts.")
@click.option("--sort", type=_SORT, default="name", show_default=True, help="Order of the keys.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Keys in the table (the first by --sort); --json prints them all.",
)
@click.pass_obj
def status(obj: Context, integration: str | None, as_json: bool, sort: str, limit: int) -> None:
    """Every limiter key in Redis: rate, tokens, cooldown, reservations, breaker."""
    limiter, backend = obj.limiter()
    if integration is not None:
        known(limiter, backend, integration)
    keys = read_keys(limiter, backend, integration)
    if as_json:
        names = sorted({key.integration for key in keys})
        held = {name: limiter.overrides(name) for name in names}
        found = [
            with_override(state.row(), held[state.integration], state.tenant) for state in keys
        ]
        found += [row for row in (_app_row(limiter, backend, name) for name in names) if row]
        forced = _forced_breaker(limiter, integration) if not keys else None
        if forced is not None:
            found.append(
                {
                    "integration": integration,
                    "tenant": None,
                    "breaker": forced.breaker,
                    "breaker_wait": round(forced.breaker_wait, 3),
                    "level": "breaker",
                }
            )
        rows = ",\n".join(json.dumps(row) for row in found)  # (a key a line)
        click.echo(f"[\n{rows}\n]" if rows else "[]")
        return
    if not keys:
        click.echo(_empty(obj, backend, integration))
        if integration is not None:  # (bounds set before any worker wrote a key)
            for tenant, override in limiter.overrides(integration).items():
                click.echo(
                    f"override on {key_text(integration, tenant)}: {override_text(override)}"
                )
            seen = _forced_breaker(limiter, integration)
            if seen is not None:
                click.echo(
                    f"breaker of {integration}: {seen.breaker}, {seen.breaker_wait:.0f} s"
                    " until its probe: its queues are paused"
                )
        return
    shown = sort_keys(keys, sort)[:limit]
    caption = (
        f"{len(keys) - len(shown):,} more: --limit, --sort or --json" if len(keys) > limit else ""
    )
    console = Console()
    title = (
        f"queue_ratelimit: {len(keys):,} key{'' if len(keys) == 1 else 's'} under {obj.prefix!r}"
    )
    console.print(status_table(shown, title, console.width, caption))
    for name in sorted({key.integration for key in keys}):
        for tenant, override in sorted(
            limiter.overrides(name).items(), key=lambda item: item[0] or ""
        ):
            click.echo(f"override on {key_text(name, tenant)}: {override_text(override)}")
        line = _app_line(limiter, backend, name)
        if line:
            click.echo(line)


def _forced_breaker(limiter: Limiter, integration: str | None) -> Snapshot | None:
    """The snapshot of an integration known here whose breaker is not closed though no key
    exists (forced open by an operator before any worker decided); else None."""
    if integration is None or integration not in limiter.configs:
        return None
    seen = limiter.snapshot(integration)
    return seen if seen.breaker != "closed" else None


def _app_row(limiter: Limiter, backend: Backend, integration: str) -> dict[str, object] | None:
    """The integration-wide level of a chained integration as ``status --json`` prints it
    (``"level": "app"``, beside the keys' rows); ``None`` for another."""
    plan = tool_plan(limiter, backend, integration)
    if plan is None or plan.app is None:
        return None
    snap = backend.app_snapshot(integration, plan)
    level = KeyState(integration, None, snap if snap.exists else None, plan.app)
    return {**level.row(), "level": "app"}


def _app_line(limiter: Limiter, backend: Backend, integration: str) -> str:
    """The integration-wide level of a chained integration, one line (``docs/limits.md``);
    ``""`` for another. Its plan is this config's, else what the workers stored."""
    plan = tool_plan(limiter, backend, integration)
    if plan is None or plan.app is None:
        return ""
    snap = backend.app_snapshot(integration, plan)
    if not snap.exists:
        return f"all tenants of {integration}: no call yet"
    level = snap.limit()
    cooling = f", cooling down {snap.cooldown_left:.1f} s" if snap.cooldown_left > 0 else ""
    return (
        f"all tenants of {integration}: {level.rate:.2f}/s, "
        f"{max(0.0, level.tokens):.1f} tokens, {level.reserved:.1f} owed{cooling}"
    )


@cli.command()
@click.argument("integration", required=False)
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes."
)
@click.option(
    "--iterations", type=int, default=0, help="Stop after this many refreshes (0: never)."
)
@click.option(
    "--sort", type=_SORT, default="requeues", show_default=True, help="Busiest keys first by."
)
@click.pass_obj
def top(obj: Context, integration: str | None, interval: float, iterations: int, sort: str) -> None:
    """``status``, live: the busiest keys first, with requeues and 429s per second."""
    from rich.live import Live

    limiter, backend = obj.limiter()
    if integration is not None:
        known(limiter, backend, integration)
    console = Console()
    meter = Activity(read_keys(limiter, backend, integration))
    done = 0
    empty = top_table([], {}, console.width, sort=sort)
    with Live(empty, console=console, auto_refresh=False) as live:
        while iterations == 0 or done < iterations:
            time.sleep(interval)
            keys = read_keys(limiter, backend, integration)
            rates = meter.measure(keys)
            rows = max(1, console.height - 7)  # title, header, rule, caption, margins
            shown = sort_keys(keys, sort, rates)[:rows]
            table = top_table(shown, rates, console.width, sort=sort, total=len(keys))
            live.update(table, refresh=True)
            done += 1


@cli.group()
def config() -> None:
    """The merged integration configuration."""


@config.command("show")
@click.argument("integration", required=False)
@click.pass_obj
def config_show(obj: Context, integration: str | None) -> None:
    """Print the merged configuration (built-ins < TOML < JSON < environment) as JSON."""
    configs = configs_from(obj.config_path)
    names = [integration] if integration else sorted(configs)
    for name in names:
        if name not in configs:
            hint = did_you_mean(name, configs)
            raise click.BadParameter(
                f"unknown integration {name!r}{hint}", param_hint="INTEGRATION"
            )
    click.echo(json.dumps({name: configs[name].to_dict() for name in names}, indent=2))


@config.command("validate")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def config_validate(path: str) -> None:
    """Check a TOML or JSON override file; exit 1 naming the bad field when invalid."""
    layer = load_json(path) if path.endswith(".json") else load_toml(path)
    configs = merge_configs(layer)
    click.echo(f"{path}: valid ({len(layer)} integrations overridden, {len(configs)} in all)")


@cli.command()
@click.option("--port", type=int, default=9808, show_default=True, help="Port to listen on.")
@click.option("--addr", default="0.0.0.0", show_default=True, help="Address to bind.")
@click.option(
    "--multiproc-dir",
    envvar="PROMETHEUS_MULTIPROC_DIR",
    default=None,
    help="prometheus-client's multiprocess directory of the workers on this host.",
)
@click.option(
    "--max-tenants",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Tenants reported per integration: the busiest (requeues and 429s, then debt).",
)
@click.pass_obj
def exporter(
    obj: Context, port: int, addr: str, multiproc_dir: str | None, max_tenants: int
) -> None:
    """Serve the fleet-wide state (and this host's worker counters) for Prometheus."""
    try:
        from queue_ratelimit.metrics import serve
    except ImportError as exc:  # (the extra is not installed)
        raise click.ClickException(
            f"the exporter needs prometheus-client ({exc}): pip install"
            " 'queue_ratelimit[prometheus]'"
        ) from None

    limiter, backend = obj.limiter()
    serve(limiter, backend, port, addr, multiproc_dir, max_tenants)
    click.echo(f"serving http://{addr}:{port}/metrics from {redacted(obj.redis_url)}")
    threading.Event().wait()


@cli.command()
@click.option("--tasks", type=int, default=800, show_default=True, help="Tasks to run.")
@click.option(
    "--hidden-limit",
    type=float,
    default=20.0,
    show_default=True,
    help="Calls per second the local upstream accepts, per integration.",
)
@click.option("--plot", "plot_path", default=None, help="Write a PNG chart of the rate here.")
@click.option(
    "--redis",
    "demo_redis",
    default=None,
    help="Run a small fleet on this Redis: limiter state, broker and --workers processes.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Celery worker processes (8 threads each) with --redis.",
)
@click.option(
    "--framework",
    type=click.Choice(["celery", "dramatiq"]),
    default="celery",
    show_default=True,
    help="Celery on its in-memory broker, or Dramatiq on its StubBroker.",
)
def demo(
    tasks: int,
    hidden_limit: float,
    plot_path: str | None,
    demo_redis: str | None,
    workers: int,
    framework: str,
) -> None:
    """The product end to end, no server needed: tasks find an upstream's hidden limit."""
    from queue_ratelimit.demo import run_demo

    summary = run_demo(
        tasks=tasks,
        hidden_limit=hidden_limit,
        plot=plot_path,
        redis_url=demo_redis,
        framework=framework,
        workers=workers,
    )
    if not summary.ok:
        raise click.ClickException(f"{summary.lost} lost, {summary.duplicates} duplicated")


for command in (reset, breaker, migrate, set_override, unset_override):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; library errors become one line on stderr and exit status 1."""
    try:
        cli.main(args=argv, prog_name="queue-ratelimit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BackendError as exc:
        click.echo(f"error: {explain(exc, Context.last)}", err=True)
        sys.exit(1)
    except QueueRateLimitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

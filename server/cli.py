"""Fleet CLI commands (`python -m server.cli ...`, or `flask --app app:server fleet ...`).

The commands find their own database (--database-url, else DATABASE_URL, else the embedded
server) and never need the web app's application context.
"""
from __future__ import annotations

import logging
import threading

import click
from flask.cli import AppGroup
from sqlalchemy.engine import Engine

from config import Settings
from data.db import DatabaseUnavailable, check_connection, describe_url, make_engine, start_embedded
from data.schema import ensure_schema

cli = AppGroup("fleet", help="Fleet Monitor commands.")
demo = AppGroup("demo", help="Demo data for a fleet that does not exist.")
cli.add_command(demo)

_URL_HELP = "PostgreSQL URL; default: DATABASE_URL, else the embedded demo database."


def register_cli(server) -> None:
    server.cli.add_command(cli)


def _open_database(database_url: str | None) -> tuple[Engine, str]:
    """An engine on the chosen database with the tables in place, and where it points."""
    settings = Settings.from_env()
    url = database_url or settings.database_url
    where = describe_url(url) if url else f"the embedded database in {settings.embedded_data_dir}"
    try:
        engine = make_engine(url or start_embedded(settings.embedded_data_dir), settings.statement_timeout_ms)
        check_connection(engine)
        ensure_schema(engine)
    except DatabaseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    return engine, where


def _log_to_console() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@demo.command("generate", with_appcontext=False)
@click.option("--jobs", type=click.IntRange(min=12), default=lambda: Settings.from_env().demo_jobs,
              show_default="FLEET_DEMO_JOBS or 150000", help="Jobs in the history.")
@click.option("--robots", type=click.IntRange(min=6), default=lambda: Settings.from_env().demo_robots,
              show_default="FLEET_DEMO_ROBOTS or 48", help="Robots in the fleet.")
@click.option("--days", type=click.IntRange(min=3), default=90, show_default=True, help="Days of history.")
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed, same fleet and history.")
@click.option("--database-url", help=_URL_HELP)
@click.option("--force", is_flag=True,
              help="Delete every row of job_queue, robots, robot_heartbeats and job_queue_dlq first.")
def generate(jobs: int, robots: int, days: int, seed: int, database_url: str | None, force: bool) -> None:
    """Fill an empty orchestrator database with a demo fleet and its history."""
    from data.demo import clear_orchestrator_tables, generate_demo, has_orchestrator_data, record_demo

    engine, where = _open_database(database_url)
    if has_orchestrator_data(engine):
        if not force:
            raise click.ClickException(
                f"{where} already holds orchestrator data (jobs, robots or heartbeats); demo data is "
                "only generated into an empty database. Use --force to delete all of it first.")
        click.echo(f"Deleting the orchestrator data in {where} ...")
        clear_orchestrator_tables(engine)
    click.echo(f"Generating {jobs:,} jobs for {robots} robots over {days} days in {where} ...")
    stats = generate_demo(engine, jobs=jobs, robots=robots, days=days, seed=seed)
    with engine.begin() as conn:
        record_demo(conn, stats)
    click.echo(f"Done in {stats['seconds']:.1f} s: {stats['jobs']:,} jobs, {stats['robots']} robots, "
               f"{stats['heartbeats']:,} heartbeats, {stats['dlq']} dead-letter entries.")


@cli.command("simulate", with_appcontext=False)
@click.option("--database-url", help=_URL_HELP)
@click.option("--seconds", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds (default: run until Ctrl-C).")
def simulate(database_url: str | None, seconds: float | None) -> None:
    """Run the live fleet simulator in the foreground."""
    from data.simulator import Simulator

    _log_to_console()
    engine, where = _open_database(database_url)
    simulator = Simulator(engine)
    click.echo(f"Simulating the fleet in {where}" + ("" if seconds else "; Ctrl-C to stop") + ".")
    simulator.start()
    try:
        threading.Event().wait(seconds)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
    totals = simulator.totals
    click.echo(f"Stopped: {totals['enqueued']} jobs queued, {totals['claimed']} claimed, "
               f"{totals['finished']} finished, {totals['heartbeats']} heartbeats.")


if __name__ == "__main__":
    cli()

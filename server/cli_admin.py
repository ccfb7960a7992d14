"""Admin commands: users and display tokens.

    flask --app app:server users create NAME --role operator   (asks for the password)
    flask --app app:server users set-password NAME
    flask --app app:server users set-role NAME admin
    flask --app app:server users disable NAME | enable NAME | list
    flask --app app:server display-tokens create "Ops room TV" | revoke ID | list
    flask --app app:server rollups refresh | reconcile | status
"""
from __future__ import annotations

import click
from flask.cli import AppGroup

from data import rollups, users
from data.db import DatabaseUnavailable
from server.state import current

users_cli = AppGroup("users", help="Manage who may sign in.")
tokens_cli = AppGroup("display-tokens", help="Manage wall-screen display tokens.")
rollups_cli = AppGroup("rollups", help="The analytics rollups (kept up to date in the background).")


def _run(action, *args):
    try:
        return action(current().engine, *args)
    except (users.UserError, DatabaseUnavailable) as exc:
        raise click.ClickException(str(exc)) from None


password_option = click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
                               help="Asked for when not given.")


@users_cli.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(users.ROLES), default="viewer", show_default=True)
@password_option
def create_user(username, role, password):
    _run(users.create_user, username, password, role)
    click.echo(f"Created {username} ({role}).")


@users_cli.command("set-password")
@click.argument("username")
@password_option
def set_password(username, password):
    _run(users.set_password, username, password)
    click.echo(f"Password of {username} changed.")


@users_cli.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice(users.ROLES))
def set_role(username, role):
    _run(users.set_role, username, role)
    click.echo(f"{username} is now {role}.")


@users_cli.command("disable")
@click.argument("username")
def disable(username):
    _run(users.set_enabled, username, False)
    click.echo(f"{username} is disabled; their sessions stop working at the next request.")


@users_cli.command("enable")
@click.argument("username")
def enable(username):
    _run(users.set_enabled, username, True)
    click.echo(f"{username} is enabled.")


@users_cli.command("list")
def list_users():
    click.echo(_run(users.list_users).to_string(index=False))


@tokens_cli.command("create")
@click.argument("name")
@click.option("--created-by", default="cli", show_default=True)
def create_token(name, created_by):
    token_id, token = _run(users.create_display_token, name, created_by)
    click.echo(f"Display token {token_id} ({name}). Shown once; open /display?token={token}")


@tokens_cli.command("revoke")
@click.argument("token_id", type=int)
def revoke_token(token_id):
    _run(users.revoke_display_token, token_id)
    click.echo(f"Display token {token_id} revoked.")


@tokens_cli.command("list")
def list_tokens():
    click.echo(_run(users.list_display_tokens).to_string(index=False))


@rollups_cli.command("refresh")
def refresh_rollups():
    """Bring the rollups up to date now (a first backfill of a long history takes minutes)."""
    while True:
        done = _run(rollups.refresh, rollups.REFRESH_BUDGET_S, current().settings.rollup_timezone)
        if done.get("skipped"):
            raise click.ClickException("Another process is refreshing the rollups; try again later.")
        click.echo(f"{done['new_hours']} new hours, {done['dirty_hours']} changed hours; "
                   f"covered until {_run(rollups.status)['covered_until']:%Y-%m-%d %H:%M %Z}")
        if not done["behind"]:
            return


@rollups_cli.command("reconcile")
def reconcile_rollups():
    """Compare every covered hour with the job table and rebuild the hours that differ."""
    done = _run(rollups.reconcile)
    click.echo("Another process holds the rollups; try again later." if done.get("skipped")
               else f"{done['rebuilt_hours']} hours rebuilt.")


@rollups_cli.command("status")
def rollup_status():
    found = _run(rollups.status)
    click.echo(f"covered until {found['covered_until']} (behind by {found['behind']}), "
               f"reconciled at {found['reconciled_at']}, days and weeks of {found['zone']}, rows {found['rows']}")


def register_admin_cli(server) -> None:
    server.cli.add_command(users_cli)
    server.cli.add_command(tokens_cli)
    server.cli.add_command(rollups_cli)

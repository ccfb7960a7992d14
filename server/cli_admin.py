"""Admin commands: users and display tokens.

    flask --app app:server users create NAME --role operator   (asks for the password)
    flask --app app:server users set-password NAME
    flask --app app:server users set-role NAME admin
    flask --app app:server users disable NAME | enable NAME | list
    flask --app app:server display-tokens create "Ops room TV" | revoke ID | list
"""
from __future__ import annotations

import click
from flask.cli import AppGroup

from data import users
from server.state import current

users_cli = AppGroup("users", help="Manage who may sign in.")
tokens_cli = AppGroup("display-tokens", help="Manage wall-screen display tokens.")


def _run(action, *args):
    try:
        return action(current().engine, *args)
    except users.UserError as exc:
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


def register_admin_cli(server) -> None:
    server.cli.add_command(users_cli)
    server.cli.add_command(tokens_cli)

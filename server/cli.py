"""Flask CLI commands (`flask --app app fleet ...`)."""
from flask.cli import AppGroup

cli = AppGroup("fleet", help="Fleet Monitor commands.")


def register_cli(server) -> None:
    server.cli.add_command(cli)

"""``medfed users add|passwd|list``: the users of the dashboard."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from medfed.commands.runs import ConfigOption, DbOption, format_moment, open_store
from medfed.errors import ConfigError
from medfed.store import Role

users_app = typer.Typer(help="Users of the dashboard.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")


@users_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[
        str,
        typer.Option(
            click_type=click.Choice([r.value for r in Role]),
            help="admin runs things; viewer watches",
        ),
    ] = Role.VIEWER.value,
    password: Annotated[str | None, typer.Option(hidden=True)] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Add a dashboard user; the password is asked for (hidden), or read from stdin."""
    _refuse_password_argument(password)
    secret = read_password(confirm=True)
    with open_store(config, db) as store:
        user = store.add_user(name, secret, role)
        store.log_activity(f"cli:{getpass.getuser()}", "user.add", user.name, {"role": user.role})
    Console().print(f"user [bold]{user.name}[/] added with role {user.role}")


@users_app.command("passwd")
def change_password(
    name: Annotated[str, typer.Argument(help="login name")],
    password: Annotated[str | None, typer.Option(hidden=True)] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Give a user a new password (asked for, or read from stdin); their sessions end."""
    _refuse_password_argument(password)
    secret = read_password(confirm=True)
    with open_store(config, db) as store:
        user = store.set_password(name, secret)
        store.log_activity(f"cli:{getpass.getuser()}", "user.password", user.name)
    Console().print(f"new password for [bold]{user.name}[/]; their open sessions have ended")


def _refuse_password_argument(password: str | None) -> None:
    if password is not None:
        raise ConfigError(
            "--password is not accepted: a password on the command line is visible to every "
            "user of this machine. Type it at the prompt, or pipe it in: "
            "`printf '%s\\n' \"$PASSWORD\" | medfed users add NAME`"
        )


def read_password(*, confirm: bool) -> str:
    """The password typed at a hidden prompt (twice when ``confirm``), or the first line of
    stdin when it is not a terminal."""
    if sys.stdin is not None and not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise ConfigError("no password on stdin: pipe one line holding the password")
        return line
    return typer.prompt("password", hide_input=True, confirmation_prompt=confirm)


@users_app.command("list")
def list_users(config: ConfigOption = None, db: DbOption = None) -> None:
    """List dashboard users."""
    with open_store(config, db) as store:
        users = store.list_users()
    table = Table(title="medfed users")
    for column in ("name", "role", "created"):
        table.add_column(column)
    for user in users:
        table.add_row(user.name, user.role, format_moment(user.created_at))
    Console().print(table)

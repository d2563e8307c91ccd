"""The ``medfed`` command line: one Typer app with a sub-app per resource."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from medfed.errors import MedfedError

app = typer.Typer(
    name="medfed",
    help="Federated learning for medical image classification, built on Flower.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _register() -> None:
    """Attach each resource's commands (imported here so `medfed --help` stays fast)."""
    from medfed.commands import register_all

    register_all(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and turns medfed errors into one or two lines and exit code 2."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except MedfedError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("[yellow]aborted[/]")
        return 1
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

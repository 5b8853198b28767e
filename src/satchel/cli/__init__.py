"""The ``satchel`` command (Typer + Rich). Front end: uses only the public SDK."""

from __future__ import annotations

import dataclasses
import importlib.util
import platform
import sys
from typing import Annotated

import typer

from satchel import __version__
from satchel.cli import admin, drive, kv, objectstore, queue, server
from satchel.cli._common import console, err_console, print_json
from satchel.client import Client
from satchel.errors import SatchelError

__all__ = ["app", "main"]

app = typer.Typer(
    help="satchel: storage for distributed AI/ML workloads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(drive.app, name="drive")
app.add_typer(kv.app, name="kv")
app.add_typer(queue.app, name="queue")
app.add_typer(objectstore.app, name="object")
app.add_typer(admin.app, name="admin")
app.command("serve")(server.serve)
app.command("login")(server.login)
app.command("logout")(server.logout)
app.command("whoami")(server.whoami)


def _version(value: bool) -> None:
    if value:
        console.print(f"satchel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """satchel: drives, volumes, datasets, buckets, KV and queues for ML jobs."""


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show the mode, where data lives, versions and which extras are installed."""
    info: dict[str, object] = {
        "satchel": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    info.update(Client.from_env().backend.describe())
    extras = {
        "server": ["fastapi", "uvicorn"],
        "s3": ["obstore"],
        "postgres": ["psycopg"],
    }
    info["extras"] = {
        name: all(importlib.util.find_spec(m) is not None for m in mods)
        for name, mods in extras.items()
    }
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in value.items())
        console.print(f"[bold]{key:>10}[/]  {value}", highlight=False)


@app.command()
def gc(
    grace: Annotated[
        float, typer.Option(help="Keep chunks leased or written in the last SECONDS.")
    ] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete unreferenced chunks (embedded mode; safe while other writers run)."""
    backend = Client.from_env().backend
    if not hasattr(backend, "gc"):
        raise SatchelError("gc runs where the data is: on the server, `satchel admin gc`")
    report = backend.gc(grace_s=grace)
    data = dataclasses.asdict(report)
    if as_json:
        print_json(data)
    else:
        console.print(", ".join(f"{k}: {v}" for k, v in data.items()))


def main() -> None:
    """Entry point: SDK errors become one red line and exit status 1, never a traceback."""
    try:
        app(prog_name="satchel")
    except SatchelError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except (OSError, ValueError) as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)

"""``satchel serve``, ``login``, ``logout``, ``whoami``: running and reaching a server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from satchel.cli._common import console, print_json
from satchel.client import Client, config_path, default_home

__all__ = ["login", "logout", "serve", "whoami"]


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8787,
    home: Annotated[
        Path | None, typer.Option(help="Where the data lives; default $SATCHEL_HOME or ~/.satchel.")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log one line per request.")] = True,
    blobs: Annotated[
        str | None,
        typer.Option(
            help="Blob store URL instead of HOME/blobs: 's3://BUCKET/PREFIX?endpoint=URL' "
            "(credentials from AWS_* variables; clients then move bytes directly)."
        ),
    ] = None,
    data_port: Annotated[
        int | None,
        typer.Option(
            help="TCP port of the data port (chunk bytes on plain threads, several times less "
            "server CPU than the API port; clients fall back to the API port without it). "
            "Default: PORT + 1 (a free one when PORT is 0); -1 turns it off.",
        ),
    ] = None,
    local_port: Annotated[
        bool,
        typer.Option(
            help="Serve clients on this machine by file descriptor (a Unix socket: the "
            "server copies chunks in the kernel, no TCP). Needs a local blob store.",
        ),
    ] = True,
    database: Annotated[
        str | None,
        typer.Option(
            envvar="SATCHEL_DATABASE",
            help="Metadata database URL instead of HOME/meta.db: "
            "'postgresql://USER@HOST:PORT/DB' (several replicas may share it).",
            show_envvar=True,
        ),
    ] = None,
) -> None:
    """Run the HTTP API over the store in HOME until SIGINT/SIGTERM.

    The first start on an empty home creates workspace 'default' and an admin token in
    HOME/admin-token (mode 0600).
    """
    try:
        from satchel.server import serve as run
    except ImportError as exc:
        raise typer.BadParameter(str(exc)) from exc
    run(
        home if home is not None else default_home(),
        host=host,
        port=port,
        access_log=access_log,
        blobs=blobs,
        database=database,
        data_port=data_port,
        local_port=local_port,
    )


def login(
    url: Annotated[str, typer.Option(help="Server URL, e.g. http://host:8787.")],
    token: Annotated[
        str | None,
        typer.Option(help="Workspace token; default $SATCHEL_TOKEN, else read from stdin."),
    ] = None,
) -> None:
    """Check URL + token against the server and save them (mode 0600) for later commands."""
    if token is None:
        token = os.environ.get("SATCHEL_TOKEN") or typer.prompt("token", hide_input=True)
    client = Client.remote(url, token.strip())
    info = client.backend.whoami()  # type: ignore[attr-defined]
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(".config.json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url.rstrip("/"), "token": token.strip()}, handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    console.print(f"logged in to {url} as workspace {info['workspace']!r} (saved in {path})")


def logout() -> None:
    """Forget the saved server login (back to embedded mode unless SATCHEL_URL is set)."""
    path = config_path()
    if path.exists():
        path.unlink()
        console.print(f"removed {path}")
    else:
        console.print("not logged in")


def whoami(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Which server and workspace the SDK uses (never the token)."""
    backend = Client.from_env().backend
    info = backend.describe()
    if backend.mode == "remote":
        info["admin"] = str(bool(backend.whoami()["admin"])).lower()  # type: ignore[attr-defined]
    if as_json:
        print_json(info)
        return
    if backend.mode == "remote":
        console.print(f"url: {info['url']}\nworkspace: {info['workspace']}", highlight=False)
    else:
        console.print(
            f"embedded (no server): home {info.get('home')}\nworkspace: {info['workspace']}",
            highlight=False,
        )

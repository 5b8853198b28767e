"""``satchel admin``: workspaces and tokens, on a home (``--home``) or a server (``--url``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer

from satchel.backend._admin import AdminOps, LocalAdmin, RemoteAdmin
from satchel.cli._common import console, print_json
from satchel.client import default_home

app = typer.Typer(help="Workspaces and tokens (server mode administration).")

Home = Annotated[Path | None, typer.Option(help="Administer the store in this folder.")]
Url = Annotated[
    str | None, typer.Option(help="Administer a running server (with --token ADMIN_TOKEN).")
]
Token = Annotated[
    str | None, typer.Option(help="An admin token; default $SATCHEL_TOKEN.", show_default=False)
]
Db = Annotated[
    str | None,
    typer.Option(
        envvar="SATCHEL_DATABASE",
        show_envvar=True,
        help="Administer this metadata database (postgresql://USER@HOST:PORT/DB) directly; "
        "with --home, the server's home (default $SATCHEL_HOME or ~/.satchel).",
    ),
]


def _ops(
    home: Path | None, url: str | None, token: str | None, database: str | None = None
) -> AdminOps:
    if url is not None and database is not None:
        raise typer.BadParameter("pass either --database (with --home) or --url, not both")
    if database is not None and home is None:
        home = default_home()
    if (home is None) == (url is None):
        raise typer.BadParameter("pass exactly one of --home DIR or --url URL (with --token)")
    if home is not None:
        return LocalAdmin(home, database=database)
    assert url is not None
    token = token or os.environ.get("SATCHEL_TOKEN", "")
    if not token:
        raise typer.BadParameter("--url needs --token ADMIN_TOKEN (or $SATCHEL_TOKEN)")
    return RemoteAdmin(url, token)


@app.command("create-workspace")
def create_workspace(
    name: Annotated[str, typer.Argument(help="[A-Za-z0-9._-]{1,64}")],
    home: Home = None,
    database: Db = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a workspace; its new token is the last line of the output."""
    new = _ops(home, url, token, database).create_workspace(name)
    typer.echo(f"created workspace {name!r}; its token (shown once):", err=True)
    typer.echo(new)


@app.command("create-token")
def create_token(
    workspace: Annotated[str, typer.Option(help="Workspace the token acts for.")],
    label: Annotated[str, typer.Option(help="A note to recognise the token by.")] = "",
    admin: Annotated[bool, typer.Option(help="Allow administering every workspace.")] = False,
    home: Home = None,
    database: Db = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create another token for a workspace; the token is the last line of the output."""
    new = _ops(home, url, token, database).create_token(workspace, label=label, admin=admin)
    typer.echo(f"new token for workspace {workspace!r} (shown once):", err=True)
    typer.echo(new)


@app.command("revoke-token")
def revoke_token(
    target: Annotated[str, typer.Argument(help="The token (sat_…) or its 12-hex-digit id.")],
    home: Home = None,
    database: Db = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Revoke a token; requests with it fail with 401 from now on."""
    token_id = _ops(home, url, token, database).revoke_token(target)
    console.print(f"revoked token {token_id}")


@app.command("list-workspaces")
def list_workspaces(
    home: Home = None,
    database: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every workspace's name."""
    names = _ops(home, url, token, database).list_workspaces()
    if as_json:
        print_json(names)
        return
    for name in names:
        typer.echo(name)


@app.command("list-tokens")
def list_tokens(
    workspace: Annotated[str | None, typer.Option(help="Only this workspace's tokens.")] = None,
    home: Home = None,
    database: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every token's id, workspace, label and state (never the secret)."""
    rows = _ops(home, url, token, database).list_tokens(workspace)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        created = dt.datetime.fromtimestamp(row["created_at"]).isoformat(timespec="seconds")
        state = "revoked" if row["revoked_at"] else ("admin" if row["admin"] else "active")
        typer.echo(f"{row['id']}  {row['workspace']:<20} {state:<8} {created}  {row['label']}")


# -- presigning keys (object storage) -----------------------------------------------------------


@app.command("rotate-signing-key")
def rotate_signing_key(
    retire_old: Annotated[
        bool, typer.Option(help="Also retire every older key: their URLs stop working now.")
    ] = False,
    home: Home = None,
    database: Db = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Sign presigned URLs with a new key; URLs signed earlier keep working until retired."""
    ops = _ops(home, url, token, database)
    old = [k["id"] for k in ops.list_signing_keys() if k["retired_at"] is None]
    new = ops.rotate_signing_key()
    console.print(f"new signing key {new}")
    if retire_old:
        for key_id in old:
            ops.retire_signing_key(key_id)
            console.print(f"retired signing key {key_id}")


@app.command("retire-signing-key")
def retire_signing_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (see list-signing-keys).")],
    home: Home = None,
    database: Db = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Invalidate every presigned URL signed with this key."""
    _ops(home, url, token, database).retire_signing_key(key_id)
    console.print(f"retired signing key {key_id}")


@app.command("list-signing-keys")
def list_signing_keys(
    home: Home = None,
    database: Db = None,
    url: Url = None,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Presigning keys: id, state and dates (never the secret)."""
    rows = _ops(home, url, token, database).list_signing_keys()
    if as_json:
        print_json(rows)
        return
    for row in rows:
        created = dt.datetime.fromtimestamp(row["created_at"]).isoformat(timespec="seconds")
        state = "retired" if row["retired_at"] else ("signing" if row["active"] else "verifying")
        typer.echo(f"{row['id']}  {state:<9} {created}")


# -- schema -------------------------------------------------------------------------------------


@app.command("migrate")
def migrate(home: Home = None, database: Db = None) -> None:
    """Upgrade the metadata schema to this version's (servers also do it when they start).

    Safe to run while servers run and from several places at once: migrations take a lock
    (an advisory lock on PostgreSQL, a file lock on SQLite) and are idempotent.
    """
    from satchel.meta import SCHEMA_HEAD, Database

    if database is None:
        root = (home if home is not None else default_home()).expanduser().absolute()
        root.mkdir(parents=True, exist_ok=True)
        database = f"sqlite:///{root / 'meta.db'}"
        db = Database(database, lock_dir=root)
    else:
        db = Database(database)
    try:
        revision = db.current_revision()
    finally:
        db.dispose()
    where = sa.engine.make_url(database)
    console.print(
        f"{where.get_backend_name()} database {where.database}: schema {revision} "
        f"(this version's newest: {SCHEMA_HEAD})",
        highlight=False,
    )


@app.command("gc")
def gc(
    home: Home = None,
    database: Db = None,
    blobs: Annotated[
        str | None,
        typer.Option(help="The servers' blob store URL (s3://…), when not HOME/blobs."),
    ] = None,
    grace: Annotated[
        float, typer.Option(help="Keep chunks leased or written in the last SECONDS.")
    ] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete unreferenced files, chunks and blobs of a server's store (safe while it serves:
    chunks leased or written within the grace period stay)."""
    from satchel.core import Core

    root = home if home is not None else default_home()
    core = Core.open_home(root, database=database, blobs=blobs)
    try:
        report = core.gc(grace_s=grace)
    finally:
        core.db.dispose()
    data = dataclasses.asdict(report)
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        typer.echo(f"{key}: {value}")

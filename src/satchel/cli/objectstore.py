"""``satchel object put|get|ls|rm|url``: the ObjectStore API on the command line."""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from satchel.cli._common import console, print_json, transfer_progress
from satchel.errors import InvalidArgumentError
from satchel.objectstore import ObjectStore

app = typer.Typer(help="Object storage: public and private buckets, presigned URLs.")

Bucket = Annotated[
    str, typer.Option("--bucket", "-b", help="Bucket: public, private or one you created.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("put")
def put(
    src: Annotated[str, typer.Argument(help="Local file, or - for standard input.")],
    key: Annotated[str | None, typer.Argument(help="Object key; default the file's name.")] = None,
    bucket: Bucket = "private",
    quiet: Quiet = False,
) -> None:
    """Upload a file as an object; print its URL (public, or presigned for 900 s)."""
    store = ObjectStore(bucket)
    if src == "-":
        if key is None:
            raise InvalidArgumentError("reading standard input needs a KEY")
        url = store.put(key, sys.stdin.buffer)
    else:
        key = key if key is not None else Path(src).name
        with transfer_progress(f"put {key}", quiet=quiet) as progress:
            url = store.put(key, src, progress=progress)
    typer.echo(url)


@app.command("get")
def get(
    key: Annotated[str, typer.Argument(help="Object key.")],
    dest: Annotated[
        str | None,
        typer.Argument(help="Local file to write, - for standard output; default the key's name."),
    ] = None,
    bucket: Bucket = "private",
    quiet: Quiet = False,
) -> None:
    """Download an object to a local file (replaced atomically) or standard output."""
    store = ObjectStore(bucket)
    if dest == "-":
        with store.get(key) as tmp:
            shutil.copyfileobj(tmp, sys.stdout.buffer)
        sys.stdout.flush()
        return
    target = (
        Path(dest) if dest is not None else Path(key.rstrip("/").rsplit("/", 1)[-1] or "object")
    )
    if target.is_dir():
        target = target / (key.rstrip("/").rsplit("/", 1)[-1] or "object")
    with transfer_progress(f"get {key}", quiet=quiet) as progress:
        store.download(key, target, progress=progress)
    if not quiet:
        console.print(f"got [bold]{key}[/] into {target}", highlight=False)


@app.command("ls")
def ls(
    prefix: Annotated[str | None, typer.Argument(help="Only keys starting with this.")] = None,
    bucket: Bucket = "private",
    as_json: AsJson = False,
    long: Annotated[bool, typer.Option("--long", "-l", help="Size and time.")] = False,
) -> None:
    """List objects (every page) in key order."""
    objects = ObjectStore(bucket).list_objects(prefix)
    if as_json:
        print_json(objects)
        return
    if not long:
        for obj in objects:
            console.print(obj["key"], highlight=False, markup=False)
        return
    table = Table(box=None, show_header=True)
    for col in ("size", "modified", "key"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for obj in objects:
        when = dt.datetime.fromtimestamp(obj["last_modified"]).isoformat(timespec="seconds")
        table.add_row(str(obj["size"]), when, obj["key"])
    console.print(table)


@app.command("rm")
def rm(
    keys: Annotated[list[str], typer.Argument(help="Object keys (missing ones are fine).")],
    bucket: Bucket = "private",
) -> None:
    """Delete objects."""
    store = ObjectStore(bucket)
    for key in keys:
        store.delete(key)
        console.print(f"deleted {key}", highlight=False, markup=False)


@app.command("url")
def url(
    key: Annotated[str, typer.Argument(help="Object key (it need not exist yet for PUT).")],
    bucket: Bucket = "private",
    expires: Annotated[
        int, typer.Option("--expires", "-e", help="Lifetime in seconds (up to the server's max).")
    ] = 900,
    method: Annotated[str, typer.Option("--method", "-m", help="GET, PUT or DELETE.")] = "GET",
) -> None:
    """Print a URL for the object: public, or presigned for METHOD (needs a server)."""
    typer.echo(ObjectStore(bucket).url(key, method=method, expires_in=expires))


@app.command("buckets")
def buckets(as_json: AsJson = False) -> None:
    """List buckets."""
    rows = ObjectStore.list_buckets()
    if as_json:
        print_json(rows)
        return
    for row in rows:
        typer.echo(f"{row['name']}  {'public' if row['public'] else 'private'}")


@app.command("create-bucket")
def create_bucket(
    name: Annotated[str, typer.Argument(help="3 to 63 of a-z 0-9 . -")],
    public: Annotated[bool, typer.Option(help="Objects readable by anyone at their URL.")] = False,
) -> None:
    """Create a bucket."""
    ObjectStore.create_bucket(name, public=public)
    console.print(f"created bucket {name} ({'public' if public else 'private'})")


@app.command("delete-bucket")
def delete_bucket(
    name: Annotated[str, typer.Argument(help="Bucket name.")],
    force: Annotated[bool, typer.Option(help="Delete its objects too.")] = False,
) -> None:
    """Delete a bucket (a non-empty one only with --force)."""
    ObjectStore.delete_bucket(name, force=force)
    console.print(f"deleted bucket {name}")

"""``satchel kv create|ls|rm|put|get|del|keys``: the KV API on the command line."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from satchel.cli._common import console, print_json
from satchel.kv import KV

app = typer.Typer(help="Namespaced key-value stores (keys ≤ 32 KiB, values ≤ 256 KiB).")

Name = Annotated[str, typer.Argument(help="Namespace name.")]
Key = Annotated[str, typer.Argument(help="Key.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("create")
def create(name: Name) -> None:
    """Create a namespace."""
    KV.create_kv(name)
    console.print(f"created KV namespace [bold]{name}[/]")


@app.command("ls")
def ls(as_json: AsJson = False) -> None:
    """List namespaces."""
    names = KV.list_kv()
    if as_json:
        print_json(names)
        return
    for name in names:
        console.print(name, highlight=False)


@app.command("rm")
def rm(name: Name) -> None:
    """Delete a namespace and all its keys."""
    KV.delete_kv(name)
    console.print(f"deleted KV namespace [bold]{name}[/]")


@app.command("put")
def put(
    name: Name,
    key: Key,
    value: Annotated[str, typer.Argument(help="Value; '-' reads bytes from stdin.")],
    ttl: Annotated[float | None, typer.Option(help="Expire after SECONDS.")] = None,
    if_absent: Annotated[bool, typer.Option(help="Only if the key is missing.")] = False,
) -> None:
    """Store a value."""
    data: str | bytes = sys.stdin.buffer.read() if value == "-" else value
    if not KV(name).put(key, data, ttl=ttl, if_absent=if_absent):
        console.print(f"key {key!r} exists: nothing written", highlight=False)
        raise typer.Exit(2)


@app.command("get")
def get(name: Name, key: Key) -> None:
    """Print a value (raw bytes on stdout); exit status 1 when missing."""
    try:
        value = KV(name).get(key)
    except KeyError:
        console.print(f"[red]error:[/] no key {key!r}", highlight=False)
        raise typer.Exit(1) from None
    sys.stdout.buffer.write(value)
    if sys.stdout.isatty():
        sys.stdout.write("\n")


@app.command("del")
def delete(name: Name, key: Key) -> None:
    """Delete a key (no error when missing)."""
    KV(name).delete(key)


@app.command("keys")
def keys(
    name: Name,
    prefix: Annotated[str | None, typer.Option(help="Only keys starting with PREFIX.")] = None,
    as_json: AsJson = False,
) -> None:
    """List keys (code point order)."""
    found = KV(name).keys(prefix=prefix)
    if as_json:
        print_json(list(found))
        return
    for key in found:
        console.print(key, highlight=False, markup=False)

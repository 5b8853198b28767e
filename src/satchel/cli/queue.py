"""``satchel queue create|ls|rm|send|receive|length``: the Queue API on the command line."""

from __future__ import annotations

import queue as _stdlib_queue
from typing import Annotated

import typer

from satchel.cli._common import console, print_json
from satchel.queue import Queue

app = typer.Typer(help="Named FIFO queues (messages ≤ 256 KiB).")

Name = Annotated[str, typer.Argument(help="Queue name.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("create")
def create(
    name: Name,
    max_receives: Annotated[
        int, typer.Option(help="Receives without ack before the dead-letter queue (0: never).")
    ] = 5,
) -> None:
    """Create a queue."""
    Queue.create_queue(name, max_receives=max_receives)
    console.print(f"created queue [bold]{name}[/]")


@app.command("ls")
def ls(as_json: AsJson = False) -> None:
    """List queues with their lengths."""
    rows = [{"name": n, "length": Queue.length(n)} for n in Queue.list_queue()]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        console.print(f"{row['name']}\t{row['length']}", highlight=False)


@app.command("rm")
def rm(name: Name) -> None:
    """Delete a queue and its messages."""
    Queue.delete_queue(name)
    console.print(f"deleted queue [bold]{name}[/]")


@app.command("send")
def send(name: Name, message: Annotated[str, typer.Argument(help="The message.")]) -> None:
    """Append a message; prints its id once it is durably stored."""
    console.print(Queue(name).send(message), highlight=False)


@app.command("receive")
def receive(
    name: Name,
    wait: Annotated[float, typer.Option(help="Seconds to wait for a message.")] = 0.0,
    as_json: AsJson = False,
) -> None:
    """Remove and print the oldest message; exit status 1 when the queue stays empty."""
    try:
        body = Queue(name).receive(wait=wait)
    except _stdlib_queue.Empty:
        console.print(f"[red]error:[/] queue {name!r} is empty", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        print_json({"body": body})
    else:
        console.print(body, highlight=False, markup=False)


@app.command("length")
def length(name: Name) -> None:
    """Messages in the queue (waiting plus received but not yet acknowledged)."""
    console.print(Queue.length(name), highlight=False)

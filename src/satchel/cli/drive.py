"""``satchel drive put|get|ls|rm``: the Drive API on the command line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from satchel.cli._common import console, print_json, transfer_progress
from satchel.drive import Drive

app = typer.Typer(help="Shared drives (lit://NAME read-write, s3://BUCKET/PREFIX/ read-only).")

DriveId = Annotated[str, typer.Argument(help="lit://NAME or s3://BUCKET/PREFIX/")]
Component = Annotated[
    str | None,
    typer.Option("--component", "-c", help="Component (work) name; default $SATCHEL_WORK."),
]
Root = Annotated[
    Path | None,
    typer.Option("--root", help="Local folder that PATH is relative to; default the cwd."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _drive(drive_id: str, component: str | None, root: Path | None, dup: bool = False) -> Drive:
    return Drive(drive_id, component_name=component, root_folder=root, allow_duplicates=dup)


@app.command("put")
def put(
    drive_id: DriveId,
    path: Annotated[str, typer.Argument(help="File or folder, relative to --root.")],
    component: Component = None,
    root: Root = None,
    allow_duplicates: Annotated[
        bool, typer.Option(help="Allow paths another component already holds.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Copy a local file or folder into the drive (this component's namespace)."""
    drive = _drive(drive_id, component, root, allow_duplicates)
    with transfer_progress(f"put {path}", quiet=quiet) as progress:
        drive.put(path, progress=progress)
    if not quiet:
        console.print(f"put [bold]{path}[/] into {drive_id} as {drive.component_name}")


@app.command("get")
def get(
    drive_id: DriveId,
    path: Annotated[str, typer.Argument(help="File or folder in the drive.")],
    component: Annotated[
        str | None, typer.Option("--component", "-c", help="Whose copy, if several hold PATH.")
    ] = None,
    root: Root = None,
    timeout: Annotated[
        float | None, typer.Option(help="Wait up to this many seconds for PATH to appear.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Write into an existing local folder.")] = False,
    quiet: Quiet = False,
) -> None:
    """Copy a file or folder from the drive to the local disk."""
    drive = Drive(drive_id, root_folder=root)
    with transfer_progress(f"get {path}", quiet=quiet) as progress:
        drive.get(
            path, component_name=component, timeout=timeout, overwrite=overwrite, progress=progress
        )
    if not quiet:
        console.print(f"got [bold]{path}[/] into {drive.root_folder}")


@app.command("ls")
def ls(
    drive_id: DriveId,
    path: Annotated[str, typer.Argument(help="Folder to list.")] = ".",
    component: Annotated[
        str | None, typer.Option("--component", "-c", help="Only this component's entries.")
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Every file below.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    long: Annotated[bool, typer.Option("--long", "-l", help="Size, time and component.")] = False,
) -> None:
    """List a drive folder (all components unless --component)."""
    drive = Drive(drive_id)
    if as_json:
        print_json([e.to_dict() for e in drive.entries(path, component, recursive=recursive)])
        return
    if not long:
        for entry in drive.list(path, component, recursive=recursive):
            console.print(entry, highlight=False, markup=False)
        return
    table = Table(box=None, show_header=True)
    for col in ("kind", "size", "modified", "component", "path"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for e in drive.entries(path, component, recursive=recursive):
        when = dt.datetime.fromtimestamp(e.mtime).isoformat(timespec="seconds")
        table.add_row(
            "dir" if e.is_dir else "file",
            "" if e.is_dir else str(e.size),
            when,
            e.namespace,
            e.path,
        )
    console.print(table)


@app.command("rm")
def rm(
    drive_id: DriveId,
    path: Annotated[str, typer.Argument(help="File or folder to delete.")],
    component: Component = None,
) -> None:
    """Delete a file or folder from this component's namespace."""
    Drive(drive_id, component_name=component).delete(path)
    console.print(f"deleted {path}")


@app.command("refresh")
def refresh(drive_id: DriveId) -> None:
    """Re-index an s3:// drive from its bucket."""
    count = Drive(drive_id).refresh()
    console.print(f"indexed {count} objects")

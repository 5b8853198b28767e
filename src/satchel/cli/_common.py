"""What every CLI command shares: output, errors, progress bars, JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

__all__ = ["RichProgress", "console", "err_console", "print_json", "transfer_progress"]

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Machine-readable output: one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


class RichProgress:
    """Adapts a Rich progress bar to the SDK's ``Progress`` protocol (thread-safe)."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def set_total(self, total_bytes: int) -> None:
        self._progress.update(self._task, total=total_bytes)

    def advance(self, n_bytes: int) -> None:
        self._progress.advance(self._task, n_bytes)


@contextmanager
def transfer_progress(label: str, *, quiet: bool = False) -> Iterator[RichProgress | None]:
    """A byte progress bar on stderr (hidden with ``quiet`` or when stderr is not a terminal)."""
    if quiet or not err_console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        yield RichProgress(progress, progress.add_task(label, total=None))

"""Shared benchmark plumbing: timing, medians, machine description, result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

_UNITS = {"": 1, "B": 1, "K": 1024, "KIB": 1024, "M": 1024**2, "MIB": 1024**2}
_UNITS.update({"G": 1024**3, "GIB": 1024**3})


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"8M"``, ``"4096"`` → bytes."""
    raw = text.strip().upper()
    digits = raw.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    unit = raw[len(digits) :]
    if unit not in _UNITS or not digits:
        raise ValueError(f"cannot parse size {text!r} (try 1GiB, 512MiB, 4KiB)")
    return int(float(digits) * _UNITS[unit])


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of ``fn()``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(*args: str | os.PathLike[str]) -> None:
    subprocess.run([os.fspath(a) for a in args], check=True)


def settle() -> None:
    """Flush dirty pages left by the previous step so that it does not slow the next one."""
    os.sync()


def fresh_memory(source: Path, scratch: Path) -> None:
    """Before a timed step that writes a big file: flush, then copy ``source`` once and delete
    the copy. On this VM pages freed a few seconds ago come back 2-3x slower than pages freed
    just now (the host reclaims guest memory freed for a while), which swung ``cp`` of 2 GiB
    from 0.7 to 4.7 s; so every contender starts right after as many clean pages were freed,
    and writes into memory in the same state."""
    settle()
    ballast = scratch / "ballast.bin"
    run("cp", source, ballast)
    settle()
    ballast.unlink()


PAUSE_HELP = (
    "stop the VM's free page reporting and DAMON reclaim during the run (root; restored "
    "afterwards): with them on, every contender's timing swings with how recently memory was "
    "freed and how long ago its pages were last touched"
)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@contextmanager
def workdir(base: str | None, name: str) -> Iterator[Path]:
    """A fresh scratch directory (same filesystem for satchel and its peers), removed after."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=f"satchel-bench-{name}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Series:
    """Timings of one contender over several runs."""

    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": self.seconds,
            "median_s": self.median,
            "best_s": self.best,
        }


def ratio(peer: Series, ours: Series) -> float:
    """Speed of satchel relative to a peer (>1 means satchel is faster): peer time / ours."""
    return peer.median / ours.median if ours.median > 0 else float("inf")


def best_ratio(peer: Series, ours: Series) -> float:
    """The same on the best run of each (less sensitive to a noisy, shared machine)."""
    return peer.best / ours.best if ours.best > 0 else float("inf")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    try:
        out = subprocess.run(
            ["df", "--output=source,fstype", os.fspath(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")[1]
        source, fstype = out.split()
        return f"{fstype} on {source}"
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError):
        return "unknown"


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", os.fspath(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", os.fspath(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


_PAGE_REPORTING = Path("/sys/module/page_reporting/parameters/page_reporting_order")
_NO_REPORTING_ORDER = 11
"""Above the kernel's largest buddy order (10): no free block is big enough to be reported."""


def page_reporting() -> str:
    """Whether the VM hands freed memory back to its host (virtio-balloon free page reporting).

    When it is on, memory freed a moment ago comes back through host page faults: a step that
    writes gigabytes of new page cache after another freed as much pays ~1-2 s/GiB more, and
    more the longer it runs (short ``cp`` runs escape most of it).
    """
    try:
        order = int(_PAGE_REPORTING.read_text())
    except (OSError, ValueError):
        return "absent"
    return "paused" if order >= _NO_REPORTING_ORDER else f"on (order {order})"


_DAMON = Path("/sys/kernel/mm/damon/admin/kdamonds")
_damon_paused = False


def _kdamonds() -> list[Path]:
    try:
        count = int((_DAMON / "nr_kdamonds").read_text())
    except (OSError, ValueError):
        return []
    return [_DAMON / str(i) for i in range(count)]


def damon() -> str:
    """Whether DAMON runs here (on this VM: proactive reclaim, a ``pageout`` scheme for page
    cache idle 60 s or more): pages a benchmark wrote a minute ago may be gone from memory."""
    states = []
    for kdamond in _kdamonds():
        try:
            states.append((kdamond / "state").read_text().strip())
        except OSError:
            continue
    if not states:
        return "absent"
    if _damon_paused:
        return "paused"
    return "on" if "on" in states else "off"


@contextmanager
def page_reporting_paused(pause: bool) -> Iterator[None]:
    """With ``pause``, stop the VM's memory give-back for the block (root only) and restore it
    afterwards: free page reporting, and DAMON's kdamonds where they run."""
    global _damon_paused
    if not pause:
        yield
        return
    try:
        before = _PAGE_REPORTING.read_text().strip()
        _PAGE_REPORTING.write_text(str(_NO_REPORTING_ORDER))
    except OSError as exc:
        raise SystemExit(f"cannot pause free page reporting ({_PAGE_REPORTING}): {exc}") from exc
    running = []
    for kdamond in _kdamonds():
        try:
            if (kdamond / "state").read_text().strip() == "on":
                (kdamond / "state").write_text("off")
                running.append(kdamond)
        except OSError as exc:
            _PAGE_REPORTING.write_text(before)
            for stopped in running:
                (stopped / "state").write_text("on")
            raise SystemExit(f"cannot pause DAMON ({kdamond}): {exc}") from exc
    _damon_paused = bool(running)
    try:
        yield
    finally:
        _PAGE_REPORTING.write_text(before)
        for kdamond in running:
            (kdamond / "state").write_text("on")
        _damon_paused = False


def machine(scratch: Path) -> dict[str, Any]:
    """What the numbers were measured on."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(mem / 1024**3, 1),
        "filesystem": _filesystem(scratch),
        "python": sys.version.split()[0],
        "satchel_commit": _commit(),
        "page_cache": "warm (cannot be dropped here); dirty pages flushed between steps",
        "free_page_reporting": page_reporting(),
        "damon": damon(),
    }


def write_result(name: str, result: dict[str, Any], out_dir: Path | None) -> Path:
    directory = out_dir if out_dir is not None else RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def table(rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def close(client: Any) -> None:
    """Release an embedded client's database handles (before its home is deleted)."""
    from satchel.backend import EmbeddedBackend

    if isinstance(client.backend, EmbeddedBackend):
        client.backend.core.db.dispose()

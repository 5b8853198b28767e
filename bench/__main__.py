"""``python -m bench b1|b2|b3|all [--runs N] [--size S] [--files N] [--fanout N]
[--pause-page-reporting]``.

``python -m bench report`` prints the Markdown summary of the saved results (bench/results).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import b1, b2, b3
from bench._common import PAUSE_HELP, RESULTS_DIR, page_reporting_paused, parse_size

_SUMMARY = {"b1": b1.summary, "b2": b2.summary, "b3": b3.summary}


def report(results: Path) -> str:
    """Markdown for bench/RESULTS.md: the machine, then each saved benchmark's tables."""
    found = {
        n: json.loads((results / f"{n}.json").read_text())
        for n in _SUMMARY
        if (results / f"{n}.json").exists()
    }
    if not found:
        return f"no results in {results}"
    lines = []
    for name, res in found.items():
        m = res["machine"]
        lines.append(
            f"_{name.upper()}: {m['date']}; {m['cpu']}, {m['cores']} cores, "
            f"{m['ram_gib']} GiB RAM; "
            f"{m['filesystem']}; Python {m['python']}; satchel {m['satchel_commit']}; "
            f"page cache {m['page_cache']}_"
        )
    lines.append("")
    for name, res in found.items():
        lines += [_SUMMARY[name](res), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("which", choices=["b1", "b2", "b3", "all", "report"])
    parser.add_argument("--runs", type=int, default=None, help="runs per contender (median)")
    parser.add_argument("--size", default="1GiB", help="B1 file size (default 1GiB)")
    parser.add_argument("--files", type=int, default=b2.DEFAULT_FILES, help="B2 file count")
    parser.add_argument("--file-size", default="4KiB", help="B2 file size (default 4KiB)")
    parser.add_argument("--fanout", type=int, default=b3.DEFAULT_FANOUT, help="B3 tree fanout")
    parser.add_argument("--workdir", default=None, help="scratch parent dir (default: $TMPDIR)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results dir (default bench/results)"
    )
    parser.add_argument("--pause-page-reporting", action="store_true", help=PAUSE_HELP)
    args = parser.parse_args(argv)

    if args.which == "report":
        print(report(args.out or RESULTS_DIR))
        return 0
    chosen = ["b1", "b2", "b3"] if args.which == "all" else [args.which]
    with page_reporting_paused(args.pause_page_reporting):
        for name in chosen:
            print(_run_one(name, args), flush=True)
            print(flush=True)
    return 0


def _run_one(name: str, args: argparse.Namespace) -> str:
    """Run one benchmark as the command line asked; its Markdown summary."""
    if name == "b1":
        res = b1.bench_b1(
            size=parse_size(args.size), runs=args.runs or 3, base=args.workdir, out_dir=args.out
        )
        return b1.summary(res)
    if name == "b2":
        res = b2.bench_b2(
            files=args.files,
            file_size=parse_size(args.file_size),
            runs=args.runs or 3,
            base=args.workdir,
            out_dir=args.out,
        )
        return b2.summary(res)
    res = b3.bench_b3(fanout=args.fanout, runs=args.runs or 5, base=args.workdir, out_dir=args.out)
    return b3.summary(res)


if __name__ == "__main__":
    raise SystemExit(main())

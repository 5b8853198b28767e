"""The benchmarks still run: every one at a tiny size, checking results, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_benchmarks_run_at_tiny_sizes(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "all",
            "--runs",
            "1",
            "--size",
            "8MiB",
            "--files",
            "200",
            "--fanout",
            "10",
            "--workdir",
            str(tmp_path),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for name, workload in (("b1", "8 MiB"), ("b2", "200 x"), ("b3", "1,000-file")):
        result = json.loads((out / f"{name}.json").read_text())
        assert workload in result["workload"]
        assert result["series"] and all(s["median_s"] > 0 for s in result["series"])
        assert result["machine"]["cores"] >= 1
        assert f"### {name.upper()}" in proc.stdout
    # Nothing is left behind in the scratch directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]

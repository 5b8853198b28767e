"""Contracts of the foundation: error tree, wire table, layering, schema head, CLI basics."""

from __future__ import annotations

import ast
import builtins
import json
import subprocess
import sys
from pathlib import Path

import pytest

import satchel
from satchel import errors
from satchel.meta import SCHEMA_HEAD

SRC = Path(satchel.__file__).parent


def test_error_tree_builtin_mixins():
    assert issubclass(errors.NotFoundError, FileNotFoundError)
    assert issubclass(errors.AlreadyExistsError, FileExistsError)
    assert issubclass(errors.PermissionDeniedError, PermissionError)
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.LimitExceededError, errors.InvalidArgumentError)
    assert issubclass(errors.TimeoutError, builtins.TimeoutError)
    for cls in errors.WIRE_TABLE.values():
        assert issubclass(cls, errors.SatchelError)


@pytest.mark.parametrize("cls", sorted(errors.WIRE_TABLE.values(), key=lambda c: c.code))
def test_wire_round_trip(cls):
    err = cls(f"bad input for {cls.__name__}")
    wire = json.loads(json.dumps(err.to_wire()))
    back = errors.error_from_wire(wire["code"], wire["message"])
    assert type(back) is cls and str(back) == str(err)
    assert 400 <= cls.http_status < 600


def test_wire_codes_unique():
    codes = [cls.code for cls in errors.WIRE_TABLE.values()]
    assert len(codes) == len(set(codes))
    assert errors.error_from_wire("no-such-code", "x").__class__ is errors.SatchelError


# Which top-level modules each layer may import (DESIGN.md: each imports only those below).
LAYERS = {
    "meta": {"errors", "meta"},
    "blobs": {"errors", "blobs"},
    "core": {"errors", "names", "meta", "blobs", "core"},
    "backend": {"errors", "names", "meta", "blobs", "core", "backend"},
}


def _satchel_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("satchel"):
            parts = node.module.split(".")
            found.add(parts[1] if len(parts) > 1 else "")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("satchel."):
                    found.add(alias.name.split(".")[1])
    return found


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_import_only_downwards(layer):
    allowed = LAYERS[layer]
    for path in (SRC / layer).rglob("*.py"):
        bad = _satchel_imports(path) - allowed
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)} (layer {layer})"


def test_import_satchel_is_light():
    code = (
        "import sys, satchel; heavy = {'fastapi', 'uvicorn', 'obstore', 'psycopg', 'alembic'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_schema_head_matches_migrations():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", "satchel.meta:migrations")
    assert ScriptDirectory.from_config(cfg).get_heads() == [SCHEMA_HEAD]


def test_fresh_home_is_migrated_to_head(tmp_path):
    backend = satchel.Client.embedded(tmp_path / "home").backend
    assert backend.core.db.current_revision() == SCHEMA_HEAD  # type: ignore[attr-defined]


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "satchel.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_cli_drive_round_trip(store, workdir, tmp_path):
    import os

    env = {**os.environ, **store.env, "SATCHEL_WORK": "cli"}
    (workdir / "d").mkdir()
    (workdir / "d/x.txt").write_text("x")
    (workdir / "top.txt").write_text("top")
    assert _cli("drive", "put", "lit://c", "d", env=env, cwd=workdir).returncode == 0
    assert _cli("drive", "put", "lit://c", "top.txt", env=env, cwd=workdir).returncode == 0
    listed = _cli("drive", "ls", "lit://c", "--json", env=env, cwd=workdir)
    rows = json.loads(listed.stdout)
    assert [(r["path"], r["is_dir"], r["namespace"]) for r in rows] == [
        ("d", True, "cli"),
        ("top.txt", False, "cli"),
    ]
    plain = _cli("drive", "ls", "lit://c", "d", env=env, cwd=workdir)
    assert plain.stdout.split() == ["d/x.txt"]
    out = tmp_path / "out"
    out.mkdir()
    assert _cli("drive", "get", "lit://c", "d", env=env, cwd=out).returncode == 0
    assert (out / "d/x.txt").read_text() == "x"
    missing = _cli("drive", "get", "lit://c", "nope", env=env, cwd=out)
    assert (
        missing.returncode == 1 and "nope" in missing.stderr and "Traceback" not in missing.stderr
    )
    bad = _cli("drive", "put", "lit://c", "../escape", env=env, cwd=workdir)
    assert bad.returncode == 1 and "../escape" in bad.stderr
    assert _cli("drive", "rm", "lit://c", "d", env=env, cwd=workdir).returncode == 0
    assert _cli("drive", "ls", "lit://c", env=env, cwd=workdir).stdout.split() == ["top.txt"]
    version = _cli("--version", env=env, cwd=workdir)
    assert version.stdout.strip() == f"satchel {satchel.__version__}"
    doctor = json.loads(_cli("doctor", "--json", env=env, cwd=workdir).stdout)
    assert doctor["mode"] == ("remote" if store.mode == "scale" else store.mode)  # a client
    assert doctor["workspace"] == store.extra.get("workspace", "default")

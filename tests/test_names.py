"""RELIABILITY T1: the path validator under a fixed corpus of nasty paths and Hypothesis.

Figures: 0 escapes (no accepted path leaves its root or keeps a '..'/'.' segment), 0 uncaught
exceptions (every refusal is an InvalidArgumentError), idempotence ``v(v(x)) == v(x)``.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satchel import Drive
from satchel.errors import InvalidArgumentError
from satchel.names import normalize_path, validate_name

NASTY = [
    "",
    ".",
    "..",
    "../",
    "./..",
    "/",
    "//",
    "/etc/passwd",
    "//etc/passwd",
    "../etc/passwd",
    "../../../../../../etc/passwd",
    "a/../../b",
    "a/./b",
    "a/..",
    "a/../",
    "..\\..\\windows",
    "a\\b",
    "C:\\Windows\\system32",
    "C:/Windows",
    "\\\\server\\share",
    "a\x00b",
    "\x00",
    "a/\x00/b",
    "a\nb",
    "a\rb",
    "a\tb",
    "\x1b[31mred",
    "a\x7fb",
    "a/\x01",
    "~/.ssh/id_rsa",
    "~root",
    "$HOME/x",
    "%2e%2e/%2e%2e/etc",
    "..%2f..%2fetc",
    "%00",
    "a" * 256,
    "a/" + "b" * 256,
    ("a/" * 2049).rstrip("/"),
    "é" * 128,
    "é" * 127 + "e",
    "x/" * 10,
    "a//b",
    "a///b//",
    "a/b/",
    "./a",
    "a/.",
    ". /x",
    " ",
    "...",
    "....//....//etc",
    "..../x",
    ".hidden",
    "a/.hidden/..x",
    "\u2024\u2024/x",
    "\uff0e\uff0e/x",
    "\u202e\u202dx",
    "a\u0301",
    "\u00e1",
    "\ud800",
    "a/\udfff",
    "CON",
    "nul.txt",
    "aux/prn",
    "\u200b",
    "a\u2028b",
    "\ufeffbom",
    "file:///etc/passwd",
    "http://169.254.169.254/",
    "s3://bucket/key",
    "lit://drive/x",
    "a:b",
    "a?b",
    "a#b",
    "a*b",
    '"quoted"',
    "'single'",
    "<tag>",
    "a|b",
    "a;rm -rf /",
    "$(reboot)",
    "`id`",
    "a b/c d",
    "🙂/🙃",
    "/./.",
    "././a",
]

assert len(NASTY) >= 80


def _check_canonical(out: str) -> None:
    assert out == unicodedata.normalize("NFC", out)
    assert not out.startswith("/") and not out.endswith("/")
    assert "//" not in out and "\\" not in out and "\x00" not in out
    segments = out.split("/")
    assert all(seg not in ("", ".", "..") for seg in segments)
    assert all(len(seg.encode()) <= 255 for seg in segments)
    assert len(out.encode()) <= 4096


def _verdict(path: object) -> str | None:
    try:
        return normalize_path(path)
    except InvalidArgumentError:
        return None


@pytest.mark.parametrize("path", NASTY)
def test_corpus_never_escapes(path, tmp_path):
    out = _verdict(path)
    if out is None:
        return
    _check_canonical(out)
    assert normalize_path(out) == out
    root = tmp_path / "root"
    root.mkdir()
    joined = os.path.realpath(root / out)
    assert joined.startswith(str(root.resolve()) + os.sep)


def test_expected_verdicts():
    assert normalize_path("a//b/") == "a/b"
    assert normalize_path("a\u0301") == "\u00e1"
    assert normalize_path(".", allow_root=True) == ""
    assert normalize_path(Path("x/y")) == "x/y"
    for bad in ("", ".", "..", "../x", "/abs", "a/../b", "a\x00", "a\\b", "a/./b", "a" * 256):
        assert _verdict(bad) is None, bad
    for bad_type in (None, 3, b"a", ["a"]):
        with pytest.raises(InvalidArgumentError):
            normalize_path(bad_type)


@settings(max_examples=800, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_property_any_text(path):
    out = _verdict(path)
    if out is not None:
        _check_canonical(out)
        assert normalize_path(out) == out


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "é", "x y", "\\", "\x00"]), max_size=8))
def test_property_segment_soup(parts):
    path = "/".join(parts)
    out = _verdict(path)
    if out is not None:
        _check_canonical(out)
        assert ".." not in out.split("/")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_property_names(name):
    try:
        out = validate_name(name)
    except InvalidArgumentError:
        return
    assert out == name and 1 <= len(name) <= 64 and "/" not in name and set(name) != {"."}


def test_drive_verdicts_match_validator(store, workdir):
    """Every corpus entry: the drive refuses exactly what the validator refuses, storing nothing."""
    drive = Drive("lit://names", root_folder=workdir)
    for path in NASTY:
        verdict = _verdict(path)
        if verdict is None:
            with pytest.raises(InvalidArgumentError):
                drive.delete(path)
            with pytest.raises(InvalidArgumentError):
                drive.get(path)
        else:
            assert drive.list(path) == []
    assert drive.list(".", recursive=True) == []

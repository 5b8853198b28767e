"""KV: Lepton's API, limits at the exact boundaries, TTL, CAS, counters, a dict-model machine.

Every test runs in every mode of the ``store`` fixture (RELIABILITY T10, T11).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import count

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from satchel import KV
from satchel.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
)

LEPTON_KV = """
from satchel import KV
# create a namespace
x = KV.create_kv("somenamespace")

from satchel import KV
# retrive a namespace
x = KV.get_kv("somenamespace")
# insert a key-value pair
x.put('somekey','somevalue')

from satchel import KV
# retrive a namespace
x = KV.get_kv("somenamespace")
# retirve the value based on a given key
x.get('somekey')
assert x.get('somekey') == b'somevalue'

from satchel import KV
# List all namespaces
x = KV.list_kv() # This is not implemented yet
assert x == ["somenamespace"], x

from satchel import KV
# retrive a namespace
x = KV.get_kv("somenamespace")
# remote the key-value pair
x.delete('somekey')

from satchel import KV
# delete a namespace
x = KV.delete_kv("somenamespace")
assert KV.list_kv() == []
"""


def test_lepton_snippets_run_unchanged(store):
    store.run_py(LEPTON_KV)


def test_namespace_lifecycle(store):
    with pytest.raises(NotFoundError):
        KV("ns")
    with pytest.raises(NotFoundError):
        KV.get_kv("ns")
    kv = KV.create_kv("ns")
    with pytest.raises(AlreadyExistsError):
        KV.create_kv("ns")
    with pytest.raises(AlreadyExistsError):
        KV("ns", error_if_exists=True)
    assert KV("ns", create_if_not_exists=True).name == "ns"
    KV("other", create_if_not_exists=True)
    assert KV.list_kv() == ["ns", "other"]
    kv.put("k", "v")
    KV.delete_kv(kv)
    KV.delete_kv("other")
    assert KV.list_kv() == []
    with pytest.raises(NotFoundError):
        KV.delete_kv("ns")
    with pytest.raises(NotFoundError):
        kv.get("k")
    # Recreated: empty.
    assert list(KV.create_kv("ns").keys()) == []


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x" * 65, "sp ace"])
def test_bad_namespace_names(store, bad):
    with pytest.raises(InvalidArgumentError):
        KV(bad, create_if_not_exists=True)


def test_put_get_delete_dict_style(store):
    kv = KV("ns", create_if_not_exists=True)
    assert kv.put("a", "1") is True
    kv["b"] = b"\x00\xff"
    assert kv.get("a") == b"1"
    assert kv["b"] == b"\x00\xff"
    assert "a" in kv and "zz" not in kv and 3 not in kv
    with pytest.raises(KeyError):
        kv.get("zz")
    with pytest.raises(KeyError):
        kv["zz"]
    del kv["a"]
    kv.delete("a")  # missing: no error
    assert "a" not in kv
    kv.put("b", "new")
    assert kv["b"] == b"new"
    assert kv.put("b", "x", if_absent=True) is False
    assert kv["b"] == b"new"
    assert kv.put("c", "x", if_absent=True) is True
    assert kv["c"] == b"x"
    kv["ünï/€"] = ""
    assert kv["ünï/€"] == b""


def test_limits_exact_boundaries(store):
    kv = KV("ns", create_if_not_exists=True)
    key_ok = "k" * 32768
    kv.put(key_ok, "v")
    assert kv.get(key_ok) == b"v"
    with pytest.raises(LimitExceededError) as info:
        kv.put("k" * 32769, "v")
    assert isinstance(info.value, ValueError)
    # Multi-byte: 10,923 × "€" (3 bytes) = 32,769 bytes although only 10,923 characters.
    with pytest.raises(LimitExceededError):
        kv.put("€" * 10923, "v")
    kv.put("big", b"x" * 262144)
    assert kv.get("big") == b"x" * 262144
    with pytest.raises(LimitExceededError):
        kv.put("big", b"y" * 262145)
    with pytest.raises(LimitExceededError):
        kv.put("new", "é" * 131073)  # 262,146 bytes as UTF-8
    with pytest.raises(LimitExceededError):
        kv.compare_and_set("big", b"x" * 262144, b"y" * 262145)
    with pytest.raises(LimitExceededError):
        kv.get("k" * 32769)
    # Nothing was written by the refused calls.
    assert kv.get("big") == b"x" * 262144
    assert sorted(kv.keys()) == sorted(["big", key_ok])


def test_ttl_expiry(store):
    kv = KV("ns", create_if_not_exists=True)
    kv.put("short", "v", ttl=0.3)
    kv.put("long", "v", ttl=60)
    assert kv.get("short") == b"v"
    assert sorted(kv.keys()) == ["long", "short"]
    time.sleep(0.45)
    with pytest.raises(KeyError):
        kv.get("short")
    assert "short" not in kv
    assert list(kv.keys()) == ["long"]
    # An expired key counts as missing for if_absent and CAS.
    assert kv.put("short", "again", if_absent=True) is True
    assert kv.get("short") == b"again"
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InvalidArgumentError):
            kv.put("x", "v", ttl=bad)


def test_keys_prefix_and_pagination(store):
    kv = KV("ns", create_if_not_exists=True)
    names = [f"p/{i:05d}" for i in range(2500)] + ["q", "p", "p0", "o\U0010ffff"]
    backend = store.client().backend
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: kv.put(name, ""), names))
    assert list(kv.keys()) == sorted(names, key=lambda k: k.encode())
    assert list(kv.keys(prefix="p/")) == [n for n in sorted(names) if n.startswith("p/")]
    assert list(kv.keys(prefix="p/01")) == [f"p/{i:05d}" for i in range(1000, 2000)]
    assert list(kv.keys(prefix="zz")) == []
    assert list(kv.keys(prefix="o\U0010ffff")) == ["o\U0010ffff"]
    page = backend.kv_keys("ns", prefix="p/", after="p/00009", limit=3)
    assert page == ["p/00010", "p/00011", "p/00012"]


def test_compare_and_set(store):
    kv = KV("ns", create_if_not_exists=True)
    assert kv.compare_and_set("k", None, "1") is True
    assert kv.compare_and_set("k", None, "2") is False
    assert kv.compare_and_set("k", "0", "2") is False
    assert kv.compare_and_set("k", b"1", "2") is True
    assert kv.get("k") == b"2"


def test_incr(store):
    kv = KV("ns", create_if_not_exists=True)
    assert kv.incr("n") == 1
    assert kv.incr("n", 10) == 11
    assert kv.incr("n", -12) == -1
    assert kv.get("n") == b"-1"
    kv.put("s", "hello")
    with pytest.raises(InvalidArgumentError):
        kv.incr("s")
    assert kv.get("s") == b"hello"
    kv.put("t", "5", ttl=60)
    assert kv.incr("t") == 6


def test_incr_across_processes_is_exact(store):
    KV("counters", create_if_not_exists=True)
    code = """
        from satchel import KV
        kv = KV("counters")
        for _ in range(100):
            kv.incr("n")
    """
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: store.run_py(code), range(4)))
    assert KV("counters").get("n") == b"400"


def test_cas_increments_from_16_threads_are_exact(store):
    kv = KV("ns", create_if_not_exists=True)
    kv.put("c", "0")
    wins = []
    each = 25 if store.mode == "embedded" else 10  # over HTTP every retry is a round trip

    def worker() -> None:
        mine = 0
        while mine < each:
            old = kv.get("c")
            if kv.compare_and_set("c", old, str(int(old) + 1)):
                mine += 1
        wins.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(wins) == 16 * each
    assert kv.get("c") == str(16 * each).encode()


def test_same_key_writers_and_readers_see_no_torn_values(store):
    """T11 (small): 32 writers × one key, 8 readers; one CAS winner per round."""
    kv = KV("ns", create_if_not_exists=True)
    kv.put("k", b"a" * 4096)
    stop = threading.Event()
    torn: list[bytes] = []

    def writer(i: int) -> None:
        value = bytes([97 + i % 26]) * 4096
        for _ in range(10):
            kv.put("k", value)

    def reader() -> None:
        while not stop.is_set():
            v = kv.get("k")
            if len(v) != 4096 or len(set(v)) != 1:
                torn.append(v)

    readers = [threading.Thread(target=reader) for _ in range(8)]
    for t in readers:
        t.start()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(writer, range(32)))
    stop.set()
    for t in readers:
        t.join(30)
    assert torn == []

    for round_ in range(5):
        kv.put("round", str(round_))
        with ThreadPoolExecutor(16) as pool:
            results = list(
                pool.map(
                    lambda i, r=round_: kv.compare_and_set("round", str(r), f"{r}-{i}"),
                    range(16),
                )
            )
        assert results.count(True) == 1


_names = count()


class KVModel(RuleBasedStateMachine):
    """The store against a plain dict (T10)."""

    def __init__(self) -> None:
        super().__init__()
        self.kv = KV(f"model{next(_names)}", create_if_not_exists=True)
        self.model: dict[str, bytes] = {}

    keys = st.sampled_from(["a", "b", "ab", "abc", "b/1", "€", ""])
    values = st.binary(max_size=16) | st.text(max_size=8)

    @staticmethod
    def _b(value: str | bytes) -> bytes:
        return value.encode() if isinstance(value, str) else value

    @rule(key=keys, value=values)
    def put(self, key: str, value: str | bytes) -> None:
        assert self.kv.put(key, value) is True
        self.model[key] = self._b(value)

    @rule(key=keys, value=values)
    def put_if_absent(self, key: str, value: str | bytes) -> None:
        written = self.kv.put(key, value, if_absent=True)
        assert written == (key not in self.model)
        self.model.setdefault(key, self._b(value))

    @rule(key=keys)
    def get(self, key: str) -> None:
        if key in self.model:
            assert self.kv.get(key) == self.model[key]
        else:
            with pytest.raises(KeyError):
                self.kv.get(key)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        self.kv.delete(key)
        self.model.pop(key, None)

    @rule(key=keys, by=st.integers(-5, 5))
    def incr(self, key: str, by: int) -> None:
        current = self.model.get(key, b"0")
        try:
            expected = int(current.decode("ascii")) + by
        except (UnicodeDecodeError, ValueError):
            with pytest.raises(InvalidArgumentError):
                self.kv.incr(key, by)
            return
        if current.strip() != current or current.startswith(b"+") or b"_" in current:
            return  # int() accepts spellings the store may too; stay on plain decimals
        assert self.kv.incr(key, by) == expected
        self.model[key] = str(expected).encode()

    @rule(key=keys, expected=st.none() | values, new=values)
    def cas(self, key: str, expected: str | bytes | None, new: str | bytes) -> None:
        want = None if expected is None else self._b(expected)
        ok = self.kv.compare_and_set(key, expected, new)
        assert ok == (self.model.get(key) == want)
        if ok:
            self.model[key] = self._b(new)

    @rule(prefix=st.sampled_from(["", "a", "b", "ab", "€"]))
    def keys_with_prefix(self, prefix: str) -> None:
        expected = sorted((k for k in self.model if k.startswith(prefix)), key=str.encode)
        assert list(self.kv.keys(prefix=prefix or None)) == expected

    @invariant()
    def same_keys(self) -> None:
        assert list(self.kv.keys()) == sorted(self.model, key=str.encode)


def test_kv_matches_dict_model(store):
    run_state_machine_as_test(
        KVModel,
        settings=settings(
            max_examples=15 if store.mode == "embedded" else 5,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_failing_ops_in_a_shared_commit_leave_the_others_intact(store):
    """Group commit: 64 concurrent writes share transactions; the ones that fail (missing
    namespace, non-integer incr, CAS mismatch) change nothing and the others all land."""
    kv = KV("ns", create_if_not_exists=True)
    kv.put("text", "hello")
    ghost = KV("ghost", create_if_not_exists=True)
    KV.delete_kv("ghost")
    errors: list[type[BaseException]] = []

    def work(i: int) -> None:
        try:
            if i % 4 == 0:
                ghost.put(f"k{i}", "x")
            elif i % 4 == 1:
                kv.incr("text")
            elif i % 4 == 2:
                assert kv.compare_and_set("text", "nope", f"v{i}") is False
                kv.put(f"k{i}", f"v{i}")
            else:
                kv.put(f"k{i}", f"v{i}", ttl=60)
                kv.incr("count")
        except (NotFoundError, InvalidArgumentError) as exc:
            errors.append(type(exc))

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(work, range(64)))
    assert sorted(errors, key=str) == sorted(
        [NotFoundError] * 16 + [InvalidArgumentError] * 16, key=str
    )
    assert kv.get("text") == b"hello"
    assert kv.get("count") == b"16"
    assert sorted(kv.keys(prefix="k")) == sorted(f"k{i}" for i in range(64) if i % 4 in (2, 3))
    assert all(kv.get(f"k{i}") == f"v{i}".encode() for i in range(64) if i % 4 in (2, 3))
    assert KV.list_kv() == ["ns"]


@pytest.mark.parametrize(
    "case",
    [
        test_put_get_delete_dict_style,
        test_limits_exact_boundaries,
        test_ttl_expiry,
        test_keys_prefix_and_pagination,
        test_compare_and_set,
        test_incr,
        test_cas_increments_from_16_threads_are_exact,
        test_failing_ops_in_a_shared_commit_leave_the_others_intact,
        test_kv_matches_dict_model,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
@pytest.mark.modes("embedded")
def test_generic_sql_path_on_sqlite(store, monkeypatch, case):
    """The dialect-neutral SQLAlchemy statements (PostgreSQL's path) give the same results as
    SQLite's raw-sqlite3 fast path: the same tests, run with ``SATCHEL_SQLITE_RAW=0``."""
    assert store.mode == "embedded"  # the statement path is chosen in-process
    monkeypatch.setenv("SATCHEL_SQLITE_RAW", "0")
    from satchel import Client

    assert Client.from_env().backend.core.kv.raw is False
    case(store)

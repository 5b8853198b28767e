"""The SDK's merging of concurrent small questions (``satchel.backend._coalesce``).

A big upload's lanes each ask whether their chunk is missing; asked at once, the questions
must share requests, every caller must get exactly its own answer (or the error of the
request that carried it), and nobody may be left waiting.
"""

from __future__ import annotations

import threading
import time

import pytest

from satchel.backend._coalesce import Coalescer
from satchel.errors import UnavailableError


class _Server:
    """Stands in for the server's answer: slow, so questions pile up behind a request."""

    def __init__(self, present: set[str], *, fail_first: bool = False) -> None:
        self.present = present
        self.calls: list[list[str]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def missing(self, items: list[str]) -> set[str]:
        with self.lock:
            self.calls.append(items)
            fail = self.fail_first and len(self.calls) == 1
        time.sleep(0.05)
        if fail:
            raise UnavailableError("server went away")
        return {i for i in items if i not in self.present}


def _ask_all(coalescer: Coalescer, questions: list[list[str]]) -> list[object]:
    answers: list[object] = [None] * len(questions)
    start = threading.Barrier(len(questions))

    def one(i: int) -> None:
        start.wait()
        try:
            answers[i] = coalescer.ask(questions[i])
        except UnavailableError as exc:
            answers[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a caller was left waiting"
    return answers


def test_concurrent_questions_share_requests_and_get_their_own_answers():
    server = _Server(present={f"h{i}" for i in range(0, 32, 2)})
    coalescer = Coalescer(server.missing, max_items=5000)
    questions = [[f"h{i}"] for i in range(32)] + [["h0", "h1", "h2", "h3"]]
    answers = _ask_all(coalescer, questions)
    for question, answer in zip(questions, answers, strict=True):
        assert answer == {h for h in question if int(h[1:]) % 2 == 1}
    assert len(server.calls) < len(questions) / 2
    assert set().union(*server.calls) == {h for q in questions for h in q}
    assert all(len(call) == len(set(call)) for call in server.calls)


def test_a_batch_never_exceeds_max_items():
    server = _Server(present=set())
    coalescer = Coalescer(server.missing, max_items=3)
    answers = _ask_all(coalescer, [[f"h{i}", f"g{i}"] for i in range(10)])
    assert all(len(a) == 2 for a in answers)  # type: ignore[arg-type]
    assert all(len(call) <= 3 for call in server.calls)


def test_a_failed_request_fails_its_callers_only():
    server = _Server(present=set(), fail_first=True)
    coalescer = Coalescer(server.missing, max_items=5000)
    answers = _ask_all(coalescer, [[f"h{i}"] for i in range(16)])
    failed = [a for a in answers if isinstance(a, UnavailableError)]
    assert failed, "the callers of the failed request see its error"
    assert all(a == {f"h{i}"} for i, a in enumerate(answers) if not isinstance(a, Exception))
    assert coalescer.ask(["x"]) == {"x"}  # nothing stuck afterwards


def test_a_lone_caller_is_not_delayed():
    server = _Server(present={"a"})
    coalescer = Coalescer(server.missing, max_items=5000)
    began = time.monotonic()
    assert coalescer.ask(["a", "b"]) == {"b"}
    assert time.monotonic() - began < 1
    assert server.calls == [["a", "b"]]


@pytest.mark.parametrize("present", [set(), {"only"}])
def test_answers_are_the_askers_subset(present):
    coalescer = Coalescer(_Server(present=present).missing, max_items=5000)
    assert coalescer.ask(["only"]) == ({"only"} - present)

"""Test hooks that make the engine misbehave on purpose (shared by the watchdog and guarded tests)."""

from __future__ import annotations

import threading


class Hang:
    """A ``before_compute`` hook that blocks every cold mask computation, holding the automaton's
    lock as a DFA row build that takes minutes would, until ``release`` is set."""

    def __init__(self, grammar) -> None:
        self.lock = grammar.automaton.lock
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, sid: int) -> None:
        with self.lock:
            self.entered.set()
            self.release.wait(300)  # a code path that waits for it makes the test time out

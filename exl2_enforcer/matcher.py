"""The per-generation cursor over a compiled grammar.

A :class:`Matcher` holds only a DFA state id and its history; everything
expensive lives in the shared :class:`~.grammar.CompiledGrammar`.  ``fork()``
is therefore a list copy, and two matchers never share mutable state.
"""

from __future__ import annotations

import numpy as np

from exl2_enforcer.engine.automaton import DEAD
from exl2_enforcer.errors import TokenRejected
from exl2_enforcer.grammar import CompiledGrammar
from exl2_enforcer.engine.mask import write_words


class Matcher:
    """Tracks one generation through a grammar and answers "which tokens next?"."""

    def __init__(self, grammar: CompiledGrammar) -> None:
        self.grammar = grammar
        self._auto = grammar.automaton
        self._tb = grammar.index.text_bytes
        self._end = frozenset(int(i) for i in grammar.index.end_ids)
        self._steps: dict[tuple[int, int], int] = {}
        self.history: list[int] = [self._auto.start]
        #: accepted token ids, end tokens included
        self.tokens: list[int] = []
        self.ended = False
        #: "normal", "salvage" (only tokens that move closer to a complete value) or
        #: "stop" (only end tokens, even before the value is complete)
        self.mode = "normal"

    @property
    def state(self) -> int:
        """The current DFA state id."""
        return self.history[-1]

    def next_state(self, token_id: int) -> int:
        """The state after ``token_id`` (``DEAD`` if refused); does not move."""
        sid = self.state
        key = (sid, token_id)
        nxt = self._steps.get(key)
        if nxt is None:
            data = self._tb[token_id] if 0 <= token_id < len(self._tb) else None
            nxt = DEAD if not data else self._auto.walk(sid, data)
            if len(self._steps) < 65536:
                self._steps[key] = nxt
        return nxt

    def accept_token(self, token_id: int) -> None:
        """Advance by one sampled token; raises :class:`TokenRejected` and stays put if refused."""
        if self.ended and token_id not in self._end:
            raise TokenRejected(token_id, "the value is complete: only end tokens may follow")
        if token_id in self._end:
            if not self.is_accepting() and self.mode != "stop":
                raise TokenRejected(token_id, "end token before the value is complete")
            self.ended = True
            self.history.append(self.state)
            self.tokens.append(token_id)
            return
        nxt = self.next_state(token_id)
        if nxt < 0:
            piece = self._tb[token_id] if 0 <= token_id < len(self._tb) else None
            why = "has no text (special or unknown id)" if not piece else f"bytes {piece!r} are not allowed here"
            raise TokenRejected(token_id, why)
        self.history.append(nxt)
        self.tokens.append(token_id)

    def try_accept(self, token_id: int) -> bool:
        """Like :meth:`accept_token` but returns False instead of raising."""
        try:
            self.accept_token(token_id)
        except TokenRejected:
            return False
        return True

    def fill_bitmask(self, out: np.ndarray, logits_width: int, deadline: float | None = None) -> None:
        """Write the allowed-token bits for a logits row ``logits_width`` wide into ``out`` (int32 words)."""
        if self.ended or self.mode != "normal":
            write_words(self.packed_mask(deadline), out, logits_width, f"{self.mode} mode, state {self.state}")
            return
        self.grammar.engine.fill(self.state, out, logits_width, deadline)

    def packed_mask(self, deadline: float | None = None) -> np.ndarray:
        """The cached packed mask of the current state at vocabulary width (do not modify)."""
        if self.ended or self.mode == "stop":
            return self.grammar.index.end_packed
        if self.mode == "salvage":
            return self.grammar.engine.salvage_mask(self.state, deadline)
        return self.grammar.engine.mask(self.state, deadline)

    def allowed_ids(self, logits_width: int | None = None) -> np.ndarray:
        """Sorted allowed token ids (below ``logits_width`` when given)."""
        ids = self.grammar.index.unpack(self.packed_mask())
        return ids if logits_width is None else ids[ids < logits_width]

    def is_accepting(self) -> bool:
        """Whether the text so far is a complete value (an end token may follow)."""
        return self._auto.is_accepting(self.state)

    def is_complete(self) -> bool:
        """Whether the value is complete and nothing but an end token may follow."""
        return self.ended or (self.is_accepting() and not self._auto.has_continuation(self.state))

    def text_bytes(self) -> bytes:
        """The bytes of the accepted text tokens (end tokens contribute nothing)."""
        return b"".join(self._tb[t] or b"" for t in self.tokens if t not in self._end)

    def next_completion_token(self) -> int:
        """One token on a shortest completion: a single-byte token, or an end id when complete.

        The cheapest safe answer when there is no time to compute a mask.
        """
        if self.ended or self.is_accepting():
            return int(self.grammar.index.end_ids[0])
        auto, dist = self._auto, self.grammar.engine.distances()
        here = dist.of_state(self.state)
        auto.ensure_rows([self.state])
        single = self.grammar.index.single_byte_ids
        for c, nxt in enumerate(auto.table[self.state].tolist()):
            if nxt >= 0 and dist.of_state(nxt) == here - 1 and single[auto.class_rep[c]] >= 0:
                return int(single[auto.class_rep[c]])
        raise TokenRejected(-1, "no single-byte token continues a shortest completion")

    def salvage(self) -> None:
        """From now on allow only tokens that bring the value strictly closer to complete, then an end token.

        The watchdog's default reaction to a trip: the output stays valid and ends
        within :meth:`distance` bytes.
        """
        self.mode = "salvage"

    def stop(self) -> None:
        """From now on allow only end tokens (the value may be left incomplete)."""
        self.mode = "stop"

    def distance(self) -> int:
        """Fewest bytes still needed for a complete value (0 when complete)."""
        return 0 if self.ended else self.grammar.engine.distances().of_state(self.state)

    @property
    def complete_value(self) -> bool:
        """Whether an end token was accepted after a complete value (not a forced stop)."""
        return self.ended and self._auto.is_accepting(self.state)

    def rollback(self, n: int = 1) -> None:
        """Undo the last ``n`` accepted tokens."""
        if n < 0 or n >= len(self.history):
            raise ValueError(f"rollback({n}): only {len(self.history) - 1} tokens accepted")
        if n:
            del self.history[-n:]
            del self.tokens[-n:]
            self.ended = any(t in self._end for t in self.tokens)

    def reset(self) -> None:
        """Return to the start state in normal mode."""
        self.history = [self._auto.start]
        self.tokens = []
        self.ended = False
        self.mode = "normal"

    def fork(self) -> "Matcher":
        """An independent matcher at the same position sharing the compiled grammar."""
        m = Matcher.__new__(Matcher)
        m.grammar, m._auto, m._tb, m._end = self.grammar, self._auto, self._tb, self._end
        m._steps = self._steps  # a cache of pure functions of (state, token): safe to share
        m.history = list(self.history)
        m.tokens = list(self.tokens)
        m.ended = self.ended
        m.mode = self.mode
        return m

    copy = fork

"""The per-generation cursor over a compiled grammar.

A :class:`Matcher` holds only a DFA state id and its history; everything
expensive lives in the shared :class:`~.grammar.CompiledGrammar`.  ``fork()``
is therefore a list copy, and two matchers never share mutable state.

When the grammar's memory budget drops its states (a new automaton
*generation*), a matcher re-interns its current state from the
:class:`~.automaton.DfaState` it kept; older history entries read
:data:`STALE` until a rollback reaches them, and are re-interned then.
"""

from __future__ import annotations

import operator
from typing import Literal

import numpy as np

from exl2_enforcer.bitmask import check_bitmask
from exl2_enforcer.engine.automaton import DEAD, UNKNOWN, DfaState
from exl2_enforcer.engine.mask import write_words
from exl2_enforcer.errors import TokenRejected
from exl2_enforcer.grammar import CompiledGrammar

#: what a matcher allows: the grammar's tokens, only completing ones (salvage) or only end tokens
MatcherMode = Literal["normal", "salvage", "stop"]

#: a history entry from before an eviction, not re-interned yet
STALE = -3


class Matcher:
    """Tracks one generation through a grammar and answers "which tokens next?"."""

    def __init__(self, grammar: CompiledGrammar) -> None:
        self.grammar = grammar
        self._auto = grammar.automaton
        self._tb = grammar.index.text_bytes
        self._slice_sizes = grammar.index.slice_sizes
        self._end = frozenset(int(i) for i in grammar.index.end_ids)
        self._steps: dict[tuple[int, int], int] = {}
        with self._auto.lock:
            self._gen = self._auto.generation
            self.history: list[int] = [self._auto.start]
            #: the DFA state of each history entry, to re-intern after an eviction
            self._visited: list[DfaState] = [self._auto.states[self._auto.start]]
        #: accepted token ids, end tokens included
        self.tokens: list[int] = []
        self.ended = False
        #: "normal", "salvage" (only tokens that move closer to a complete value) or
        #: "stop" (only end tokens, even before the value is complete)
        self.mode: MatcherMode = "normal"

    @property
    def state(self) -> int:
        """The current DFA state id (of the automaton's current generation)."""
        if self._gen != self._auto.generation or self.history[-1] == STALE:
            self._resync()
        return self.history[-1]

    @property
    def dfa_state(self) -> DfaState:
        """The current :class:`DfaState` object: valid in every generation (see ``Automaton.reintern``)."""
        return self._visited[-1]

    def _resync(self) -> None:
        auto = self._auto
        with auto.lock:
            if self._gen != auto.generation:
                self.history = [STALE] * len(self.history)
                self._steps = {}
                self._gen = auto.generation
            self.history[-1] = auto.reintern(self._visited[-1])

    def push_state(self, sid: int) -> None:
        """Record ``sid`` (reached by bytes fed outside this matcher) as the current state.

        ``sid`` must be of the automaton's current generation: hold ``automaton.lock``
        from computing it to this call.
        """
        with self._auto.lock:
            self.history.append(sid)
            self._visited.append(self._auto.states[sid])

    def next_state(self, token_id: int) -> int:
        """The state after ``token_id`` (``DEAD`` if refused); does not move.

        The id is of the automaton's current generation (hold ``automaton.lock`` to keep it so).
        """
        with self._auto.lock:
            sid = self.state
            key = (sid, token_id)
            nxt = self._steps.get(key)
            if nxt is None:
                data = self._tb[token_id] if 0 <= token_id < len(self._tb) else None
                if not data:
                    nxt = DEAD
                else:
                    fast = self._slice_step(sid, token_id)
                    nxt = self._auto.walk(sid, data) if fast is None else fast
                if len(self._steps) < 65536:
                    self._steps[key] = nxt
            return nxt

    def _slice_step(self, sid: int, token_id: int) -> int | None:
        """The state after a token made only of slice elements (plain string characters,
        whitespace) when ``sid`` sits in such a loop: one state, not one per element; else None."""
        for kind, sizes in self._slice_sizes.items():
            n = int(sizes[token_id]) if token_id < sizes.shape[0] else -1
            if n > 0:
                nxt = self._auto.slice_advance(sid, kind, n)
                if nxt is not None:
                    return nxt
        return None

    def _known_step(self, token_id: int) -> tuple[int, DfaState] | None:
        """The next state and its :class:`DfaState` when every row it needs is built, read without the
        lock (so a guarded call never waits for a worker building rows); None when the step needs the
        lock: rows to build, a refused token, or an eviction under way or since the last step."""
        auto = self._auto
        seq = auto.seq
        if seq & 1 or self._gen != auto.generation or self.history[-1] == STALE:
            return None
        nxt = self.peek_next_state(token_id)
        if nxt is None or nxt < 0:
            return None
        states = auto.states
        st = states[nxt] if nxt < len(states) else None
        return (nxt, st) if st is not None and auto.seq == seq else None

    def peek_next_state(self, token_id: int) -> int | None:
        """The state after ``token_id`` (``DEAD`` if refused) when it needs no DFA row that is
        not computed yet, else None; never computes (cheap, safe while other threads build rows)."""
        nxt = self._steps.get((self.state, token_id))
        if nxt is not None:
            return nxt
        data = self._tb[token_id] if 0 <= token_id < len(self._tb) else None
        if not data:
            return DEAD
        auto, sid = self._auto, self.state
        for b in data:
            sid = auto.table.item(sid, auto.class_of_byte.item(b))
            if sid == UNKNOWN:
                return None
            if sid < 0:
                return DEAD
        return sid

    def in_free_string(self) -> bool:
        """Whether the position is inside an unbounded free-text string (its plain-character loop)."""
        return not self.ended and self._auto.slice_budget(self.state) == ("plain", None)

    def accept_token(self, token_id: int) -> None:
        """Advance by one sampled token; raises :class:`TokenRejected` and stays put if refused.

        ``token_id`` is an int (numpy integers too); anything else raises TypeError.
        """
        token_id = _token_id(token_id)
        if self.ended and token_id not in self._end:
            raise TokenRejected(token_id, "the value is complete: only end tokens may follow")
        if token_id in self._end:  # no state id is needed: never waits for the automaton's lock
            if not self.is_accepting() and self.mode != "stop":
                raise TokenRejected(token_id, "end token before the value is complete")
            self.ended = True
            self.history.append(self.history[-1])
            self._visited.append(self._visited[-1])
            self.tokens.append(token_id)
            return
        known = self._known_step(token_id)
        if known is not None:
            self.history.append(known[0])
            self._visited.append(known[1])
            self.tokens.append(token_id)
            self.grammar.enforce_budget()
            return
        with self._auto.lock:  # state ids stay in one generation until pushed
            nxt = self.next_state(token_id)
            if nxt < 0:
                piece = self._tb[token_id] if 0 <= token_id < len(self._tb) else None
                why = "has no text (special or unknown id)" if not piece else f"bytes {piece!r} are not allowed here"
                raise TokenRejected(token_id, why)
            self.push_state(nxt)
            self.tokens.append(token_id)
        self.grammar.enforce_budget()

    def try_accept(self, token_id: int) -> bool:
        """Like :meth:`accept_token` but returns False instead of raising."""
        try:
            self.accept_token(token_id)
        except TokenRejected:
            return False
        return True

    def fill_bitmask(self, out: np.ndarray, logits_width: int, deadline: float | None = None) -> None:
        """Write the allowed-token bits for a logits row ``logits_width`` wide into ``out``.

        ``out``: a C-contiguous int32 numpy array (or CPU torch tensor) of shape ``(words,)``,
        ``words >= ceil(logits_width / 32)``; bits at or beyond ``logits_width`` are cleared.
        ``deadline`` is a ``time.perf_counter()`` value for a cold mask computation.
        Raises :class:`~exl2_enforcer.errors.BitmaskError` for a wrong buffer or width,
        :class:`~exl2_enforcer.errors.MaskTimeout` past the deadline.
        """
        out = check_bitmask(out, logits_width, name="out")
        if self.ended or self.mode != "normal":
            write_words(self.packed_mask(deadline), out, logits_width, f"{self.mode} mode, state {self.state}")
            return
        with self._auto.lock:
            self.grammar.engine.fill(self.state, out, logits_width, deadline)
        self.grammar.enforce_budget()

    def packed_mask(self, deadline: float | None = None) -> np.ndarray:
        """The cached packed mask of the current state at vocabulary width (do not modify)."""
        if self.ended or self.mode == "stop":
            return self.grammar.index.end_packed
        with self._auto.lock:  # no eviction between reading the id and using it
            if self.mode == "salvage":
                packed = self.grammar.engine.salvage_mask(self.state, deadline)
            else:
                packed = self.grammar.engine.mask(self.state, deadline)
        self.grammar.enforce_budget()
        return packed

    def allowed_ids(self, logits_width: int | None = None) -> np.ndarray:
        """Sorted allowed token ids (int64, below ``logits_width`` when given; ValueError if negative)."""
        if logits_width is not None and logits_width < 0:
            raise ValueError(f"logits_width must be >= 0, got {logits_width}")
        ids = self.grammar.index.unpack(self.packed_mask())
        return ids if logits_width is None else ids[ids < logits_width]

    def is_accepting(self) -> bool:
        """Whether the text so far is a complete value (an end token may follow)."""
        # the current state's own object, valid in every generation: no id to resolve, no lock
        return self._visited[-1].accepting

    def is_complete(self) -> bool:
        """Whether the value is complete and nothing but an end token may follow."""
        with self._auto.lock:
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
        auto = self._auto
        with auto.lock:
            dist = self.grammar.engine.distances()
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
        if self.ended:
            return 0
        with self._auto.lock:
            return self.grammar.engine.distances().of_state(self.state)

    @property
    def complete_value(self) -> bool:
        """Whether an end token was accepted after a complete value (not a forced stop)."""
        return self.ended and self.is_accepting()

    def rollback(self, n: int = 1) -> None:
        """Undo the last ``n`` accepted tokens; ValueError unless ``0 <= n <=`` tokens accepted."""
        if n < 0 or n >= len(self.history):
            raise ValueError(f"rollback(n) needs 0 <= n <= {len(self.history) - 1} (the tokens accepted), got {n}")
        if n:
            del self.history[-n:]
            del self._visited[-n:]
            del self.tokens[-n:]
            self.ended = any(t in self._end for t in self.tokens)

    def reset(self) -> None:
        """Return to the start state in normal mode."""
        with self._auto.lock:
            self._gen = self._auto.generation
            self.history = [self._auto.start]
            self._visited = [self._auto.states[self._auto.start]]
        self.tokens = []
        self.ended = False
        self.mode = "normal"

    def fork(self) -> Matcher:
        """An independent matcher at the same position sharing the compiled grammar."""
        m = Matcher.__new__(Matcher)
        m.grammar, m._auto, m._tb, m._end = self.grammar, self._auto, self._tb, self._end
        m._slice_sizes = self._slice_sizes
        m._steps = self._steps  # a cache of pure functions of (state, token): safe to share
        m._gen = self._gen
        m.history = list(self.history)
        m._visited = list(self._visited)
        m.tokens = list(self.tokens)
        m.ended = self.ended
        m.mode = self.mode
        return m

    copy = fork


def _token_id(token_id: object) -> int:
    """``token_id`` as an int; TypeError naming the parameter for anything that is not an integer
    (a bool too: ``True`` would silently be token 1, and ``rollback`` refuses bools as well)."""
    if isinstance(token_id, (bool, np.bool_)):
        raise TypeError(f"token_id must be an int, got {token_id!r} (bool)")
    try:
        return operator.index(token_id)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"token_id must be an int, got {token_id!r} ({type(token_id).__name__})") from None

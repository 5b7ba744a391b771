"""How every non-plain token reads when it starts inside a JSON string.

Inside a string (at a character boundary) a token either stays in the string,
closes it with ``"`` and continues with some bytes after the quote, or is
refused.  What it does depends only on its bytes, not on the grammar or the
character count so far, so it is computed once per vocabulary: the number of
characters it starts, whether it closes the string, and its *post* bytes.

A state inside a ``maxLength``-bounded string then needs no trie walk: its
non-plain tokens are those with ``chars <= budget`` that stay open, plus those
that close with ``need <= chars <= budget`` and whose post bytes the state
after the quote accepts (one cached walk of a small trie of distinct post
strings per such state).  The lexing uses this package's own JSON character
automaton, so the two can never disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from exl2_enforcer.compile.charset import ANY_CP, json_char_fragment
from exl2_enforcer.compile.nfa import NFA
from exl2_enforcer.engine.automaton import Automaton
from exl2_enforcer.tokens.trie import TokenTrie, build_trie

if TYPE_CHECKING:
    from exl2_enforcer.engine.mask import TokenIndex


class StringLexicon:
    """Per-token facts for the tokens outside the plain-content slice."""

    def __init__(self, index: "TokenIndex") -> None:
        tb = index.vocab.token_bytes
        ids = index.slices["plain"].rest_ids
        nfa = NFA()
        body = nfa.loop(json_char_fragment(nfa, ANY_CP), 0, None, slice_kind="plain")
        auto = Automaton(nfa, nfa.seq([nfa.literal(b'"'), body, nfa.literal(b'"')]), max_depth=1)
        inside = auto.walk(auto.start, b'"')
        posts: dict[bytes, int] = {b"": 0}
        n = ids.shape[0]
        chars = np.zeros(n, np.int32)
        closes = np.zeros(n, bool)
        ok = np.zeros(n, bool)
        post = np.zeros(n, np.int32)
        for row, tid in enumerate(ids.tolist()):
            c, closed_at, good = _lex(auto, inside, tb[tid])
            chars[row], ok[row] = c, good
            if closed_at >= 0:
                closes[row] = True
                post[row] = posts.setdefault(tb[tid][closed_at + 1:], len(posts))
        self.ids = ids
        self.chars = chars
        self.closes = closes
        self.ok = ok
        self.post = post
        closing = np.flatnonzero(ok & closes)
        #: the accepted tokens that close the string: their ids, characters and post strings
        #: (a few percent of the lexicon, the only part that depends on what follows the string)
        self.close_ids = ids[closing]
        self.close_chars = chars[closing]
        self.close_post = post[closing]
        #: the most characters a token of the lexicon starts inside the string
        self.max_chars = int(chars.max()) if n else 0
        self.n_posts = len(posts)
        post_list = list(posts)
        self.post_trie: TokenTrie = build_trie(np.arange(1, len(post_list)), post_list)


def _lex(auto: Automaton, inside: int, data: bytes) -> tuple[int, int, bool]:
    """(characters started, index of the closing quote or -1, whether the token is accepted)."""
    state, count = inside, 0
    for j, byte in enumerate(data):
        if state == inside:
            if byte == 0x22:
                return count, j, True
            count += 1
        state = auto.step(state, byte)
        if state < 0:
            return count, -1, False
    return count, -1, True

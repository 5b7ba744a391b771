"""Token masks: which token ids may come next in a DFA state, as packed bits.

Layout (shared with xgrammar and llguidance): int32 words, bit ``j`` of word
``i`` is token ``32*i + j``, 1 = allowed.

Per vocabulary (:class:`TokenIndex`, built once and cached on the vocabulary):

* the trie of all text tokens;
* the **plain-content slice**: tokens that are complete UTF-8 with no ``"``,
  ``\\`` or control byte.  Inside a free-text string every such token is
  allowed, so a string state takes them wholesale (or those with at most ``R``
  characters, for a ``maxLength`` budget) and walks only the trie of the
  remaining tokens.  This turns the "32k allowed tokens" step, the slowest one
  for character-trie engines, into one of the cheapest.

Per compiled grammar (:class:`MaskEngine`): the walk, and an LRU cache of
masks per DFA state bounded in bytes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from exl2_enforcer.engine import native
from exl2_enforcer.engine.automaton import DEAD, Automaton
from exl2_enforcer.engine.distance import Distances
from exl2_enforcer.engine.lexicon import StringLexicon
from exl2_enforcer.engine.runs import RunMemo, RunTables, run_mask
from exl2_enforcer.errors import EnforcerError, MaskTimeout
from exl2_enforcer.lru import SizedLRU
from exl2_enforcer.tokens.trie import TokenTrie, build_trie, expand_ranges

if TYPE_CHECKING:
    from exl2_enforcer.tokens.vocabulary import TokenVocabulary


#: frontier size below which the trie walk goes on in plain Python
SCALAR_FRONTIER = 24
#: most plain-string masks kept apart from the per-state cache (distinct budgets near a maxLength)
PLAIN_MASKS = 256


def _ws_bytes(data: bytes) -> int:
    """Length of ``data`` if it is only JSON whitespace, else -1."""
    return len(data) if data and not data.strip(b" \t\n\r") else -1


def _plain_chars(data: bytes) -> int:
    """Code points in ``data`` if it is plain JSON string content, else -1."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return -1
    for ch in text:
        o = ord(ch)
        if o < 0x20 or ch == '"' or ch == "\\":
            return -1
    return len(text)


@dataclass
class VocabSlice:
    """Tokens made only of one kind of element, and a trie of all the other tokens."""

    ids: np.ndarray  # token ids in the slice
    sizes: np.ndarray  # elements per token (code points, or bytes)
    rest_ids: np.ndarray  # every other text token
    rest_trie: TokenTrie  # ... as a trie
    packed: dict[int | None, np.ndarray]  # packed masks by budget

    @cached_property
    def max_size(self) -> int:
        """The largest token in the slice, in elements (a scan of every size: computed once)."""
        return int(self.sizes.max()) if self.sizes.size else 0


class TokenIndex:
    """Everything about a vocabulary that mask computation needs, built once.

    Use :meth:`for_vocabulary`, which caches the index on the vocabulary object.
    """

    def __init__(self, vocab: "TokenVocabulary") -> None:
        t0 = time.perf_counter()
        self.vocab = vocab
        tb = vocab.token_bytes
        # markup (chat-control added tokens) is never constrained text
        hidden = vocab.special_ids | getattr(vocab, "markup_ids", frozenset())
        text = [i for i, b in enumerate(tb) if b and i not in hidden]
        #: ``token_bytes`` as constrained text sees it: markup ids have no bytes
        self.text_bytes: list[bytes | None] = tb if len(hidden) == len(vocab.special_ids) else \
            [None if i in hidden else b for i, b in enumerate(tb)]
        self.text_ids = np.asarray(text, dtype=np.int32)
        self.trie: TokenTrie = build_trie(self.text_ids, tb)
        self.slices: dict[str, VocabSlice] = {
            "plain": self._make_slice(np.array([_plain_chars(cast(bytes, tb[i])) for i in text], dtype=np.int32)),
            "ws": self._make_slice(np.array([_ws_bytes(cast(bytes, tb[i])) for i in text], dtype=np.int32)),
        }
        #: per slice kind, each token id's element count in that slice (-1: not in it)
        self.slice_sizes: dict[str, np.ndarray] = {}
        for kind, sl in self.slices.items():
            sizes = np.full(len(tb), -1, dtype=np.int32)
            sizes[sl.ids] = sl.sizes
            self.slice_sizes[kind] = sizes
        self.end_ids = np.asarray(sorted(vocab.end_ids), dtype=np.int64)
        width = max(vocab.n_ids, int(self.end_ids.max()) + 1 if self.end_ids.size else 0)
        self.n_words = (width + 31) // 32
        self.n_bits = self.n_words * 32
        self.end_packed = self.pack(self.end_ids)
        #: byte value -> a token id made of exactly that byte (-1 if the vocabulary has none)
        self.single_byte_ids = np.full(256, -1, dtype=np.int64)
        for i in reversed(text):
            if len(cast(bytes, tb[i])) == 1:
                self.single_byte_ids[cast(bytes, tb[i])[0]] = i
        self._lists: dict[int, tuple[list[int], list[int], list[int]]] = {}
        self._lock = threading.Lock()
        self._lexicon: "StringLexicon | None" = None
        self._open_packed: dict[int | None, np.ndarray] = {}
        #: per byte set, the tokens' runs in it (see engine/runs.py); ``run_tables.max_bytes`` bounds them
        self.run_tables = RunTables(self.text_ids, self.text_bytes, self.pack, self.n_words * 4)
        # one-time work that would otherwise land on the first mask of the first grammar
        self.trie_lists(self.trie)
        for kind, sl in self.slices.items():
            self.slice_packed(kind, None)
            self.trie_lists(sl.rest_trie)
        self.string_open_packed(None)
        self.build_seconds = time.perf_counter() - t0

    @classmethod
    def for_vocabulary(cls, vocab: "TokenVocabulary") -> "TokenIndex":
        """The cached index of ``vocab`` (built on first use)."""
        idx = getattr(vocab, "_exl2_token_index", None)
        if idx is None:
            idx = cls(vocab)
            vocab._exl2_token_index = idx  # type: ignore[attr-defined]
        return idx

    def pack(self, ids: np.ndarray) -> np.ndarray:
        """Packed int32 mask words with the bits of ``ids`` set.  Raises ValueError (IndexError
        without the C extension) for an id outside the vocabulary."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if native.enabled:  # one pass over the ids: no 128k-entry bool array to pack
            words = np.zeros(self.n_words, dtype=np.uint32)
            native.pack_ids(ids, words)
            return words.view("<i4")
        if ids.shape[0] < 1000:
            # few ids: scatter bits straight into words (4x faster than packbits here)
            words = np.zeros(self.n_words, dtype=np.uint32)
            np.bitwise_or.at(words, ids >> 5, np.left_shift(np.uint32(1), (ids & 31).astype(np.uint32)))
            return words.view("<i4")
        bits = np.zeros(self.n_bits, dtype=bool)
        bits[ids] = True
        packed: np.ndarray = np.packbits(bits, bitorder="little").view("<i4").copy()
        return packed

    def _make_slice(self, sizes: np.ndarray) -> "VocabSlice":
        member = sizes > 0
        rest = self.text_ids[~member]
        return VocabSlice(self.text_ids[member], sizes[member], rest, build_trie(rest, self.vocab.token_bytes), {})

    def string_lexicon(self) -> "StringLexicon":
        """The lexicon of non-plain tokens read inside a string (built on first use)."""
        if self._lexicon is None:
            with self._lock:
                if self._lexicon is None:
                    self._lexicon = StringLexicon(self)
        return self._lexicon

    def slice_packed(self, kind: str, budget: int | None) -> np.ndarray:
        """Packed mask of the ``kind`` slice's tokens of at most ``budget`` elements (None: all)."""
        sl = self.slices[kind]
        if budget is not None and budget >= sl.max_size:
            budget = None
        got = sl.packed.get(budget)
        if got is None:
            got = self.pack(sl.ids if budget is None else sl.ids[sl.sizes <= budget])
            with self._lock:
                sl.packed[budget] = got
        return got

    def string_open_packed(self, budget: int | None) -> np.ndarray:
        """Packed mask of the tokens that leave a plain string open after at most ``budget`` characters
        (None: any): the plain slice's and the lexicon's non-closing accepted ones.

        Cached per budget: at most one mask per budget up to the longest token (bounded by the
        vocabulary, like :meth:`slice_packed`: about 2 MB on llama3, whose plain tokens reach 128
        characters); shared: do not modify it.
        """
        lex = self.string_lexicon()
        if budget is not None and budget >= max(lex.max_chars, self.slices["plain"].max_size):
            budget = None
        got = self._open_packed.get(budget)
        if got is None:
            fits = lex.ok & ~lex.closes
            if budget is not None:
                fits &= lex.chars <= budget
            got = self.pack(lex.ids[fits]) | self.slice_packed("plain", budget)
            with self._lock:
                self._open_packed[budget] = got
        return got

    def trie_lists(self, trie: TokenTrie) -> tuple[list[int], list[int], list[int]]:
        """Python-list views of a trie's arrays, for the scalar tail of walks (cached)."""
        key = id(trie)
        got = self._lists.get(key)
        if got is None:
            got = (trie.byte.tolist(), trie.child_lo.tolist(), trie.child_hi.tolist())
            with self._lock:
                self._lists[key] = got
        return got

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """Sorted token ids whose bits are set in ``packed``."""
        bits = np.unpackbits(packed.view(np.uint8), bitorder="little")
        return np.flatnonzero(bits)


class MaskCache:
    """Packed masks by DFA state, least recently used dropped first, each distinct mask stored once.

    Many states of a grammar share one mask (every integer value of a long object, the same
    key at every level of a tree): about 8 states per distinct mask in a 500-property object.
    Masks are compared by :meth:`fingerprint`, then in full, so an array is shared only by
    equal masks.  ``nbytes`` counts each stored array once and is kept at most ``max_bytes``
    (unless one mask alone is larger).  Returned arrays are shared: do not modify them.
    Not thread-safe by itself (the engine holds a lock around it).
    """

    #: one word in this many goes into a mask's fingerprint
    SAMPLE = 16

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._by_state: OrderedDict[int, tuple[np.ndarray, Hashable]] = OrderedDict()
        #: fingerprint -> [array, states holding it] (a list: unequal masks may share a fingerprint)
        self._arrays: dict[Hashable, list[list[Any]]] = {}

    def __len__(self) -> int:
        return len(self._by_state)

    def get(self, sid: int) -> np.ndarray | None:
        """The mask of ``sid`` if cached (then it becomes the most recently used)."""
        got = self._by_state.get(sid)
        if got is None:
            return None
        self._by_state.move_to_end(sid)
        return got[0]

    def put(self, sid: int, packed: np.ndarray) -> np.ndarray:
        """Cache ``packed`` as the mask of ``sid``; returns the stored array (an equal one if cached)."""
        old = self._by_state.get(sid)
        if old is not None:
            return old[0]
        key = self.fingerprint(packed)
        bucket = self._arrays.setdefault(key, [])
        data = packed.tobytes() if bucket else b""
        for entry in bucket:
            if entry[0].tobytes() == data:  # one memcmp: cheaper than numpy's array_equal on 16 KB
                entry[1] += 1
                packed = entry[0]
                break
        else:
            bucket.append([packed, 1])
            self.nbytes += packed.nbytes
        self._by_state[sid] = (packed, key)
        while self.nbytes > self.max_bytes and len(self._by_state) > 1:
            self._drop(*self._by_state.popitem(last=False)[1])
        return packed

    @classmethod
    def fingerprint(cls, packed: np.ndarray) -> Hashable:
        """A key that equal masks share: a 64-bit hash of every word (native), else (every ``SAMPLE``-th
        word as bytes, the wrapped uint64 sum of the words taken in pairs)."""
        if native.enabled:
            # numpy's reduce and the sample cost 7-16 us a mask (a tenth of a cold step), the hash under 1
            return native.mask_hash(packed)
        # the sample alone lets the many sparse masks of structural states (a few punctuation
        # tokens each, differing off the sampled words) collide; a sum of the words over the whole
        # mask tells nearly all of them apart, for less than the full comparisons it saves
        even = packed[: packed.shape[0] & ~1]
        return packed[:: cls.SAMPLE].tobytes(), int(np.add.reduce(even.view(np.uint64)))

    def clear(self) -> None:
        """Drop every mask."""
        self._by_state.clear()
        self._arrays.clear()
        self.nbytes = 0

    def _drop(self, packed: np.ndarray, key: Hashable) -> None:
        bucket = self._arrays[key]
        for i, entry in enumerate(bucket):
            if entry[0] is packed:
                entry[1] -= 1
                if entry[1] == 0:
                    del bucket[i]
                    self.nbytes -= packed.nbytes
                    if not bucket:
                        del self._arrays[key]
                return


class MaskEngine:
    """Computes and caches the packed token mask of each DFA state of one automaton."""

    def __init__(self, automaton: Automaton, index: TokenIndex, *, cache_bytes: int = 256 << 20) -> None:
        self.automaton = automaton
        self.index = index
        self._cache = MaskCache(cache_bytes)
        self._cache_lock = threading.Lock()
        self._posts: dict[int, np.ndarray] = {}
        #: plain-string masks by (budget, characters still needed, state after the quote)
        self._plain_masks: SizedLRU[np.ndarray] = SizedLRU(PLAIN_MASKS * index.n_words * 4, lambda m: m.nbytes)
        self._salvage: dict[int, np.ndarray] = {}
        #: what the byte-set run path remembers per state (engine/runs.py)
        self._runs = RunMemo(automaton)
        #: bytes of the salvage masks, post-quote tables and run-path memo (outside the LRU)
        self.side_bytes = 0
        #: the automaton generation the caches keyed by state id belong to
        self._gen = automaton.generation
        self._distances: "Distances | None" = None
        #: test hook: called with the DFA state id before each computed (cold) mask (the watchdog
        #: tests hang the engine here to prove a guarded call returns anyway)
        self.before_compute: Callable[[int], None] | None = None
        #: test hook: called between chunks of walk work (to simulate a slow constraint)
        self.chunk_hook: Callable[[], None] | None = None

    @property
    def cache_bytes(self) -> int:
        """The bound of the mask cache, in bytes of distinct masks."""
        return self._cache.max_bytes

    @property
    def cached_states(self) -> int:
        """How many states have their mask cached now."""
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        """Bytes of the distinct masks cached now."""
        return self._cache.nbytes

    def retained_bytes(self) -> int:
        """Bytes held by cached masks (normal, plain-string and salvage) and post-quote tables."""
        return self.cached_bytes + self.side_bytes + self._plain_masks.size

    def clear_states(self) -> None:
        """Forget everything keyed by DFA state id (after the automaton evicted its states)."""
        with self._cache_lock:
            self._cache.clear()
        self._posts = {}
        self._plain_masks.clear()
        self._salvage = {}
        self._runs = RunMemo(self.automaton)
        self.side_bytes = 0
        self._gen = self.automaton.generation
        if self._distances is not None:
            self._distances.clear_states()

    def mask(self, sid: int, deadline: float | None = None) -> np.ndarray:
        """The packed mask of DFA state ``sid`` (end ids included when it accepts).

        ``deadline`` is a ``time.perf_counter()`` value; a cold computation that
        passes it raises :class:`MaskTimeout` between trie levels.  Raises ValueError when
        ``sid`` is not a state of the automaton's current generation.
        """
        if self._gen != self.automaton.generation:
            self.clear_states()
        with self._cache_lock:
            got = self._cache.get(sid)
            if got is not None:
                return got
        self._require_state(sid)
        if self.before_compute is not None:
            self.before_compute(sid)
        packed = self._compute(sid, deadline)
        with self._cache_lock:
            return self._cache.put(sid, packed)

    def _require_state(self, sid: int) -> None:
        # numpy would wrap a negative id around to another state's row (a garbage mask), and
        # the native walk would read before its table
        n = len(self.automaton.states)
        if not 0 <= sid < n:
            raise ValueError(f"sid {sid} is not a DFA state of this automaton ({n} states)")

    def _compute(self, sid: int, deadline: float | None) -> np.ndarray:
        a, idx = self.automaton, self.index
        with a.lock:
            fast = a.slice_budget(sid)
            if fast is None:
                packed = self._full(sid, deadline)
            else:
                kind, budget = fast
                if kind == "plain" and a.others_only_on(sid, 0x22):
                    packed = self._plain_string_mask(sid, budget, deadline)  # shared: not changed in place
                else:
                    packed = self._walk_packed(idx.slices[kind].rest_trie, sid, deadline,
                                               base=idx.slice_packed(kind, budget))
            if a.is_accepting(sid):
                packed = packed | idx.end_packed
        return packed

    def _full(self, sid: int, deadline: float | None) -> np.ndarray:
        """The packed mask of a state no vocabulary slice covers: by byte-set runs, else by a trie walk."""
        idx = self.index
        memo = self._runs
        held = memo.nbytes
        try:
            got = run_mask(self.automaton, idx.run_tables, sid, lambda: self._check(sid, deadline), memo)
        finally:
            # entries made before a MaskTimeout stay in the memo: count them too
            self.side_bytes += memo.nbytes - held
        if got is None:
            return self._walk_packed(idx.trie, sid, deadline)
        return got[0]

    def _check(self, sid: int, deadline: float | None) -> None:
        """Between chunks of walk work: the test hook, then the deadline."""
        if self.chunk_hook is not None:
            self.chunk_hook()
        if deadline is not None and time.perf_counter() > deadline:
            raise MaskTimeout(f"mask computation for state {sid} passed its deadline")

    def _plain_string_mask(self, sid: int, budget: int | None, deadline: float | None) -> np.ndarray:
        """The mask of a state inside a plain string (shared: copy before changing it).

        It depends only on the budget (up to the longest token), the characters still required
        before the quote may close and the state after that quote, so the states of one
        ``maxLength`` string share it: computed once, not once per position.
        """
        a, idx = self.automaton, self.index
        lex = idx.string_lexicon()
        if budget is not None and budget >= max(lex.max_chars, idx.slices["plain"].max_size):
            budget = None  # every token fits: the same mask as an unbounded string's
        need = a.slice_need(sid)
        at = a.slice_advance(sid, "plain", need) if need else sid
        after = DEAD if at is None or at < 0 else a.step(at, 0x22)
        return self._plain_masks.get((budget, need, after), lambda: self._closing_packed(
            budget, need, after, deadline) | idx.string_open_packed(budget))

    def _closing_packed(self, budget: int | None, need: int, after: int, deadline: float | None) -> np.ndarray:
        """Packed mask of the lexicon's tokens that close a plain string (no trie walk): those with
        ``need`` to ``budget`` characters before the quote whose bytes after it the state ``after``
        the quote accepts.  The tokens that leave it open are :meth:`TokenIndex.string_open_packed`."""
        lex = self.index.string_lexicon()
        chars = lex.close_chars
        keep = chars >= need
        if budget is not None:
            keep &= chars <= budget
        if after < 0:
            keep[:] = False
        elif keep.any():  # no walk after the quote when no token could close here
            keep &= self._post_accept(after, deadline)[lex.close_post]
        return self.index.pack(lex.close_ids[keep])

    def _post_accept(self, after: int, deadline: float | None) -> np.ndarray:
        """Which post-quote byte strings the state ``after`` the closing quote accepts (cached)."""
        got = self._posts.get(after)
        if got is None:
            lex = self.index.string_lexicon()
            got = np.zeros(lex.n_posts, bool)
            got[0] = True  # nothing after the quote
            got[self._walk(lex.post_trie, after, deadline)] = True
            self._posts[after] = got
            self.side_bytes += got.nbytes
        return got

    def _walk(self, trie: TokenTrie, sid: int, deadline: float | None) -> np.ndarray:
        """Token ids of ``trie`` whose bytes lead from ``sid`` to a live state."""
        return self._walk_states(trie, sid, deadline)[0]

    def _walk_packed(self, trie: TokenTrie, sid: int, deadline: float | None,
                     base: np.ndarray | None = None) -> np.ndarray:
        """:meth:`_walk` as a packed mask (int32 words, a new array), or'ed with the packed mask ``base``."""
        if not native.enabled:
            packed = self.index.pack(self._walk(trie, sid, deadline))
            return packed if base is None else packed | base
        # the walk only sets bits: it may start from a copy of the base
        words = np.zeros(self.index.n_words, np.uint32) if base is None else base.view(np.uint32).copy()
        self._check(sid, deadline)
        native.trie_walk(self.automaton, trie, sid, words, lambda: self._check(sid, deadline))
        return words.view("<i4")

    def _walk_states(self, trie: TokenTrie, sid: int, deadline: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`_walk`, also giving the state each allowed token ends in."""
        a = self.automaton
        if native.enabled:
            self._check(sid, deadline)
            _n, ids, ends = native.trie_walk(a, trie, sid, None, lambda: self._check(sid, deadline), with_states=True)
            return ids, ends
        cls_of = a.class_of_byte
        nodes = np.arange(trie.child_lo[0], trie.child_hi[0], dtype=np.int64)
        states = np.full(nodes.shape[0], sid, dtype=np.int64)
        hit_nodes: list[np.ndarray] = []
        hit_states: list[np.ndarray] = []
        while nodes.shape[0]:
            self._check(sid, deadline)
            if nodes.shape[0] <= SCALAR_FRONTIER:
                tail_nodes, tail_states = self._walk_scalar(trie, nodes.tolist(), states.tolist(), deadline)
                hit_nodes.append(tail_nodes)
                hit_states.append(tail_states)
                break
            nxt = a.step_many(states, cls_of[trie.byte[nodes]])
            keep = nxt >= 0
            nodes = nodes[keep]
            states = nxt[keep].astype(np.int64)
            hit_nodes.append(nodes)
            hit_states.append(states)
            nodes, src = expand_ranges(trie.child_lo[nodes], trie.child_hi[nodes])
            states = states[src]
        if not hit_nodes:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        alive = np.concatenate(hit_nodes)
        tok_pos, src = expand_ranges(trie.tok_lo[alive], trie.tok_hi[alive])
        return trie.tok_ids[tok_pos], np.concatenate(hit_states)[src]

    def _walk_scalar(self, trie: TokenTrie, nodes: list[int], states: list[int],
                     deadline: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Depth-first walk for a narrow frontier, where numpy's per-call cost dominates."""
        a = self.automaton
        byte, lo, hi = self.index.trie_lists(trie)
        cls_of = a.class_of_byte.tolist()
        # frontier states are the parents' states: step each node's own byte first
        stack = []
        for node, parent_state in zip(nodes, states):
            nxt = a.step_class(parent_state, cls_of[byte[node]])
            if nxt >= 0:
                stack.append((node, nxt))
        alive: list[int] = []
        alive_states: list[int] = []
        steps = 0
        while stack:
            node, state = stack.pop()
            alive.append(node)
            alive_states.append(state)
            if not steps & 1023:  # a chunk of work: on entry, then every 1024 nodes
                if self.chunk_hook is not None:
                    self.chunk_hook()
                if deadline is not None and time.perf_counter() > deadline:
                    raise MaskTimeout("mask computation passed its deadline")
            steps += 1
            for child in range(lo[node], hi[node]):
                nxt = a.step_class(state, cls_of[byte[child]])
                if nxt >= 0:
                    stack.append((child, nxt))
        return np.asarray(alive, dtype=np.int64), np.asarray(alive_states, dtype=np.int64)

    # -- salvage: shortest completion ----------------------------------------------------
    def salvage_mask(self, sid: int, deadline: float | None = None) -> np.ndarray:
        """Packed mask of tokens that bring ``sid`` strictly closer to a complete value.

        In an accepting state only the end ids.  Every salvage step lowers the
        distance, so a salvaged generation ends within ``distance(sid)`` bytes.
        The mask is never empty: the single-byte token of a shortest
        completion's next byte always qualifies.  Raises ValueError when ``sid`` is not a
        state of the automaton's current generation.
        """
        if self._gen != self.automaton.generation:
            self.clear_states()
        got = self._salvage.get(sid)
        if got is not None:
            return got
        self._require_state(sid)
        idx = self.index
        with self.automaton.lock:
            dist = self.distances()
            here = dist.of_state(sid)
            packed: np.ndarray
            if here == 0:
                packed = idx.end_packed.copy()
            else:
                ids, ends = self._walk_states(idx.trie, sid, deadline)
                uniq, inv = np.unique(ends, return_inverse=True)
                closer = np.array([dist.of_state(int(s)) < here for s in uniq.tolist()], dtype=bool)
                packed = idx.pack(ids[closer[inv]])
            self._salvage[sid] = packed
            self.side_bytes += packed.nbytes
        return packed

    def distances(self) -> "Distances":
        """The completion distances of this automaton (built on first use)."""
        if self._gen != self.automaton.generation:
            self.clear_states()
        if self._distances is None:
            self._distances = Distances(self.automaton)
        return self._distances

    def fill(self, sid: int, out: np.ndarray, width: int, deadline: float | None = None) -> None:
        """Write the mask of ``sid`` for a logits row ``width`` wide into ``out``.

        ``out`` is an int32 array of at least ``ceil(width/32)`` words.  Ids at or
        beyond ``width`` are never allowed; ids the vocabulary lacks stay 0.
        """
        write_words(self.mask(sid, deadline), out, width, f"state {sid}")


def popcount(packed: np.ndarray) -> int:
    """Number of set bits in a packed mask."""
    words = packed.view(np.uint32)
    if hasattr(np, "bitwise_count"):
        return int(np.bitwise_count(words).sum())
    return int(np.unpackbits(words.view(np.uint8)).sum())  # numpy < 2.0


def write_words(packed: np.ndarray, out: np.ndarray, width: int, what: str) -> None:
    """Copy a packed mask into ``out`` for a logits row ``width`` wide, clearing every bit >= ``width``.

    Raises instead of handing the sampler an all-masked row ("Filter excluded all
    tokens"); that cannot happen while every byte is a token below the width.
    """
    if native.enabled:  # one C pass: a numpy copy, clear and count_nonzero cost 3-5 us a fill
        if not native.write_words(packed, out, width):
            raise EnforcerError(f"no allowed token below logits width {width} in {what}")
        return
    n_out = (width + 31) // 32
    n = packed.shape[0]
    row = out[:n_out]
    if n >= n_out:  # the usual case: one copy, nothing to clear
        row[:] = packed[:n_out]
        if width % 32:
            row[n_out - 1] &= np.int32((1 << (width % 32)) - 1)
    else:
        row[:n] = packed
        row[n:] = 0
    if not np.count_nonzero(row):  # half the time of .any() on a whole vocabulary's words
        raise EnforcerError(f"no allowed token below logits width {width} in {what}")

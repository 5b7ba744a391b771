"""Helpers of the ExLlamaV2 filters that need no exllamav2: caches, token tables, width handling.

Kept apart from :mod:`.exllamav2` (the only module that imports exllamav2) so that file holds the
protocol and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np
import torch

from exl2_enforcer.engine.automaton import Automaton
from exl2_enforcer.lru import SizedLRU, attached
from exl2_enforcer.tokens.vocabulary import TokenVocabulary

#: bytes of derived per-state data (torch masks, id arrays) kept per grammar
STATE_CACHE_BYTES = 32 << 20
NO_LIMIT = 1 << 62
#: bytes that can occur in free string content unescaped (no '"', no '\\', no control byte)
PLAIN_BYTES = bytes(b for b in range(0x20, 0x100) if b not in (0x22, 0x5C))


class StateCache:
    """A :class:`~exl2_enforcer.lru.SizedLRU` bounded in bytes whose builders return ``(value, size)``."""

    def __init__(self, max_bytes: int) -> None:
        self._lru: SizedLRU[tuple[Any, int]] = SizedLRU(max_bytes, size_of=lambda entry: entry[1])

    def get(self, key: Hashable, build: Callable[[], tuple[Any, int]]) -> Any:
        """The value of ``key``; ``build()`` returns ``(value, size in bytes)`` on a miss."""
        return self._lru.get(key, build)[0]


class VocabTables:
    """Every token's bytes in one buffer, to walk many tokens through the DFA at once."""

    def __init__(self, vocab: TokenVocabulary) -> None:
        table = vocab.token_bytes
        self.lengths = np.fromiter((len(b) if b else 0 for b in table), dtype=np.int64, count=len(table))
        self.offsets = np.zeros(len(table), dtype=np.int64)
        self.offsets[1:] = np.cumsum(self.lengths)[:-1]
        self.flat = np.frombuffer(b"".join(b for b in table if b), dtype=np.uint8)
        self.plain = np.fromiter((b is not None and len(b) > 0 and not b.translate(None, PLAIN_BYTES)
                                  for b in table), dtype=np.bool_, count=len(table))


def complete_tokens(auto: Automaton, sid: int, ids: np.ndarray, tables: VocabTables) -> np.ndarray:
    """The ids whose bytes lead from ``sid`` to a complete state (accepting, nothing may follow)."""
    if ids.size == 0:
        return ids
    lengths = tables.lengths[ids]
    order = np.argsort(-lengths, kind="stable")  # longest first: the tokens still walking are a prefix
    ids, lengths = ids[order], lengths[order]
    offsets = tables.offsets[ids]
    states = np.full(ids.size, sid, dtype=np.int64)
    neg = -lengths
    for pos in range(int(lengths[0])):
        cur = states[: int(np.searchsorted(neg, -pos, side="left"))]
        live = np.flatnonzero(cur >= 0)
        if live.size == 0:
            break
        cur[live] = auto.step_many(cur[live], auto.class_of_byte[tables.flat[offsets[live] + pos]])
    reached = np.unique(states[states >= 0]).tolist()
    complete = [s for s in reached if auto.is_accepting(s) and not auto.has_continuation(s)]
    return ids[np.isin(states, complete)] if complete else ids[:0]


def plain_safe(auto: Automaton, sid: int, safe: set[int], limit: int = 4096) -> bool:
    """Whether no run of zero or more plain bytes leads from ``sid`` to a complete state
    (False when unsure).

    Inside a free-text string this holds, and then no plain token (most of the vocabulary)
    needs walking to find the tokens that complete the value.  Every state reachable from a
    safe state is safe too, so the answer is recorded in ``safe`` for the whole closure."""
    if sid in safe:
        return True
    if auto.is_accepting(sid) and not auto.has_continuation(sid):
        return False  # the empty run: a complete state must never enter ``safe``
    classes = np.unique(auto.class_of_byte[np.frombuffer(PLAIN_BYTES, dtype=np.uint8)])
    seen, frontier = {sid}, [sid]
    while frontier:
        auto.ensure_rows(frontier)
        reached = np.unique(auto.table[np.asarray(frontier)][:, classes]).tolist()
        frontier = []
        for s in reached:
            if s < 0 or s in seen or s in safe:
                continue
            if (auto.is_accepting(s) and not auto.has_continuation(s)) or len(seen) >= limit:
                return False
            seen.add(s)
            frontier.append(s)
    safe.update(seen)
    return True


def plain_safe_states(grammar: Any) -> set[int]:
    """The grammar's set of plain-safe state ids for its automaton's current generation."""
    holder: list[Any] = attached(grammar, "_exl2_plain_safe", lambda: [-1, set()])
    gen = grammar.automaton.generation
    if holder[0] != gen:
        holder[0], holder[1] = gen, set()
    return holder[1]


def fed_token_id(token: Any) -> int:
    """The id in a (1, 1) tensor as the job feeds it (a plain int is accepted too)."""
    if isinstance(token, torch.Tensor):
        if token.numel() != 1:
            raise ValueError(f"feed() takes one token, got a tensor of shape {tuple(token.shape)}")
        return int(token.item())
    return int(token)


def parse_trigger(trigger: str | bytes | int | None) -> tuple[int | None, bytes | None]:
    """``(trigger id, trigger bytes)``, at most one of them set."""
    if trigger is None:
        return None, None
    if isinstance(trigger, int) and not isinstance(trigger, bool):
        return trigger, None
    if isinstance(trigger, (str, bytes)) and trigger:
        return None, trigger.encode("utf-8") if isinstance(trigger, str) else bytes(trigger)
    raise TypeError(f"trigger must be a non-empty string or a token id, got {trigger!r}")


def resolve_vocab(model: Any, tokenizer: Any, vocab: TokenVocabulary | None,
                   extra_end_ids: Iterable[int]) -> TokenVocabulary:
    """The given vocabulary, or the exact one of the exllamav2 tokenizer (cached per tokenizer)."""
    extra = [int(i) for i in extra_end_ids]
    if vocab is not None:
        missing = sorted(set(extra) - vocab.end_ids)
        if missing:
            raise ValueError(f"extra_end_ids {missing} are not end ids of the vocab= given; build it with them")
        return vocab
    config = getattr(model, "config", None)
    if config is None or tokenizer is None:
        raise ValueError("pass the ExLlamaV2 model and tokenizer (or vocab=) to build the filter")
    return TokenVocabulary.from_exllamav2(tokenizer, config, extra)


def excluded_mask_from_words(words: np.ndarray, usable: int, width: int, device: torch.device) -> torch.Tensor:
    """Bool tensor ``width`` long, True = excluded: the bits of ``words`` for the first ``usable`` ids."""
    bits = np.unpackbits(words.view(np.uint8), bitorder="little", count=usable)
    excluded = torch.ones(width, dtype=torch.bool)
    excluded[:usable] = torch.from_numpy(bits == 0)
    return excluded.to(device)


def excluded_mask(ids: np.ndarray, width: int, device: torch.device) -> tuple[torch.Tensor, int]:
    excluded = torch.zeros(width, dtype=torch.bool)
    excluded[torch.from_numpy(ids)] = True
    return excluded.to(device), width

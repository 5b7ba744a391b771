"""A byte trie over token strings, stored as flat numpy arrays for vectorised walks.

Nodes are numbered level by level (all depth-1 nodes, then depth-2, ...), and
within a level in lexicographic order, so the children of a node are one
contiguous id range ``child_lo[n]:child_hi[n]``.  A mask walk then moves a
whole frontier of (node, automaton state) pairs one level down with a handful
of numpy operations instead of visiting nodes one by one in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenTrie:
    """Flat trie: node 0 is the root (empty prefix)."""

    byte: np.ndarray  # uint8 per node: the byte on the edge into the node (root: 0)
    child_lo: np.ndarray  # int32 per node
    child_hi: np.ndarray  # int32 per node
    tok_lo: np.ndarray  # int32 per node: range into tok_ids of tokens ending here
    tok_hi: np.ndarray
    tok_ids: np.ndarray  # int32 token ids, grouped by end node
    n_tokens: int

    @property
    def n_nodes(self) -> int:
        """Number of nodes including the root."""
        return int(self.byte.shape[0])


def build_trie(ids: np.ndarray, token_bytes: Sequence[bytes | None]) -> TokenTrie:
    """Build the trie of ``token_bytes[i]`` for every id in ``ids`` (non-empty strings).

    Tokens with identical bytes share one end node.  The work is a sort plus
    numpy passes over a padded byte matrix; about 0.1-0.3 s for 128k tokens.
    """
    ids = np.asarray(ids, dtype=np.int64)
    pairs = sorted((token_bytes[i], int(i)) for i in ids)
    n = len(pairs)
    if n == 0:
        z = np.zeros(1, dtype=np.int32)
        return TokenTrie(np.zeros(1, np.uint8), z, z.copy(), z.copy(), z.copy(), np.zeros(0, np.int32), 0)
    strings = [p[0] for p in pairs]
    sorted_ids = np.fromiter((p[1] for p in pairs), dtype=np.int32, count=n)
    lens = np.fromiter((len(s) for s in strings), dtype=np.int64, count=n)
    maxlen = int(lens.max())
    mat = np.zeros((n, maxlen + 1), dtype=np.uint8)
    flat = np.frombuffer(b"".join(strings), dtype=np.uint8)
    rows = np.repeat(np.arange(n), lens)
    cols = np.arange(flat.shape[0]) - np.repeat(np.cumsum(lens) - lens, lens)
    mat[rows, cols] = flat
    # longest common prefix with the previous token (the padding column never matches
    # beyond the shorter string because lengths are compared separately)
    lcp = np.zeros(n, dtype=np.int64)
    if n > 1:
        diff = mat[1:] != mat[:-1]
        diff[:, -1] = True
        first = diff.argmax(axis=1)
        lcp[1:] = np.minimum(first, np.minimum(lens[1:], lens[:-1]))

    node_bytes = [np.zeros(1, np.uint8)]
    parents = [np.full(1, -1, np.int64)]
    node_at = np.zeros(n, dtype=np.int64)  # node of each token at the current depth
    end_node = np.zeros(n, dtype=np.int64)
    next_id = 1
    for d in range(1, maxlen + 1):
        sel = np.nonzero(lens >= d)[0]
        new = lcp[sel] < d
        ids_d = next_id + np.cumsum(new) - 1
        node_bytes.append(mat[sel[new], d - 1])
        parents.append(node_at[sel[new]])
        node_at[sel] = ids_d
        ends = lens[sel] == d
        end_node[sel[ends]] = ids_d[ends]
        next_id += int(new.sum())

    byte = np.concatenate(node_bytes)
    parent = np.concatenate(parents)
    n_nodes = byte.shape[0]
    # children of a node are contiguous and parents ascend within a level
    child_lo = np.searchsorted(parent[1:], np.arange(n_nodes), side="left").astype(np.int32) + 1
    child_hi = np.searchsorted(parent[1:], np.arange(n_nodes), side="right").astype(np.int32) + 1
    order = np.argsort(end_node, kind="stable")
    tok_ids = sorted_ids[order]
    ends_sorted = end_node[order]
    tok_lo = np.searchsorted(ends_sorted, np.arange(n_nodes), side="left").astype(np.int32)
    tok_hi = np.searchsorted(ends_sorted, np.arange(n_nodes), side="right").astype(np.int32)
    return TokenTrie(byte, child_lo, child_hi, tok_lo, tok_hi, tok_ids.astype(np.int32), n)


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``arange(lo[i], hi[i])`` for all i; also return each item's source index."""
    counts = (hi - lo).astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    src = np.repeat(np.arange(lo.shape[0]), counts)
    offsets = np.cumsum(counts) - counts
    items = lo.astype(np.int64)[src] + (np.arange(total) - offsets[src])
    return items, src

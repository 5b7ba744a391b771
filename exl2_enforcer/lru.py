"""A small thread-safe LRU cache with a visible, settable bound, and per-object shared state.

Values are built outside the lock (builders must be pure: two threads may build the same
key, and the first stored wins), so a slow build never blocks readers of other keys.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, cast

V = TypeVar("V")
T = TypeVar("T")

_ATTACH_LOCK = threading.Lock()


def attached(obj: Any, attr: str, factory: Callable[[], T]) -> T:
    """``obj.attr``, created once by ``factory()`` under a lock, so every user of ``obj`` (the
    filters and guards of one grammar or vocabulary) shares the same one."""
    with _ATTACH_LOCK:
        got = getattr(obj, attr, None)
        if got is None:
            got = factory()
            setattr(obj, attr, got)
        return cast(T, got)


class SizedLRU(Generic[V]):
    """Least-recently-used cache bounded by the total ``size_of(value)`` of its entries.

    ``max_size``: the bound (entries, when ``size_of`` is the default ``1`` per value; bytes when
    it returns ``nbytes``); at least the most recent entry is always kept.  Change it at any
    time; it applies from the next insertion.  Raises ValueError for a negative bound.
    """

    def __init__(self, max_size: int, size_of: Callable[[V], int] = lambda value: 1) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        self.max_size = max_size
        self.size_of = size_of
        self.size = 0
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def peek(self, key: Hashable) -> V | None:
        """The cached value of ``key`` (marked recently used), or None."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        """The value of ``key``, built by ``build()`` and stored on a miss."""
        hit = self.peek(key)
        if hit is not None:
            return hit
        value = build()
        with self._lock:
            stored = self._items.get(key)
            if stored is not None:  # another thread built it first: share that one
                return stored[0]
            size = self.size_of(value)
            self._items[key] = (value, size)
            self.size += size
            while self.size > self.max_size and len(self._items) > 1:
                _, (_, old) = self._items.popitem(last=False)
                self.size -= old
        return value

    def discard(self, predicate: Callable[[Hashable, V], bool]) -> int:
        """Remove every entry for which ``predicate(key, value)`` holds; returns how many."""
        with self._lock:
            doomed = [k for k, (v, _) in self._items.items() if predicate(k, v)]
            for k in doomed:
                self.size -= self._items.pop(k)[1]
        return len(doomed)

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            self._items.clear()
            self.size = 0

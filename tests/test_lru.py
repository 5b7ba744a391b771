"""SizedLRU (exl2_enforcer/lru.py) and the grammar cache built on it."""

from __future__ import annotations

import threading

import pytest

from exl2_enforcer.lru import SizedLRU


def test_evicts_least_recently_used_by_total_size():
    cache: SizedLRU[bytes] = SizedLRU(max_size=10, size_of=len)
    for key in "abc":
        cache.get(key, lambda k=key: k.encode() * 4)  # 4 bytes each: c evicts a
    assert cache.peek("a") is None and cache.size == 8
    cache.peek("b")  # b is now more recent than c
    cache.get("d", lambda: b"dddd")
    assert cache.peek("c") is None and cache.peek("b") == b"bbbb" and cache.size == 8
    cache.get("huge", lambda: b"x" * 50)  # bigger than the bound: kept alone
    assert len(cache) == 1 and cache.size == 50
    with pytest.raises(ValueError, match="max_size"):
        SizedLRU(max_size=-1)


def test_concurrent_builders_share_the_first_stored_value():
    cache: SizedLRU[object] = SizedLRU(max_size=4)
    barrier, got = threading.Barrier(4), []

    def build() -> object:
        barrier.wait()
        return object()

    threads = [threading.Thread(target=lambda: got.append(cache.get("k", build))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(v) for v in got}) == 1 and len(cache) == 1

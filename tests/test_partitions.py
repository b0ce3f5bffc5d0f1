from __future__ import annotations

import threading

import pytest

from buttress import ConfigurationError
from buttress._state.partitions import Partitions


def test_lru_eviction_keeps_memory_bounded() -> None:
    evicted: list[str] = []
    parts: Partitions[str, list[str]] = Partitions(
        lambda k: [k], max_keys=3, on_evict=lambda k, v: evicted.append(k)
    )
    a = parts.get("a")
    parts.get("b")
    parts.get("c")
    assert parts.get("a") is a  # touch a: b is now least recently used
    parts.get("d")
    assert evicted == ["b"]
    assert len(parts) == 3
    assert parts.peek("b") is None


def test_max_keys_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_keys"):
        Partitions(lambda k: k, max_keys=0)


def test_threads_get_one_state_per_key() -> None:
    parts: Partitions[int, object] = Partitions(lambda k: object(), max_keys=1000)
    seen: list[object] = []

    def worker() -> None:
        seen.extend(parts.get(i % 10) for i in range(1000))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(x) for x in seen}) == 10


def test_pinned_states_are_never_evicted() -> None:
    busy = {"a"}
    evicted: list[str] = []
    parts: Partitions[str, str] = Partitions(
        lambda k: k, max_keys=2, on_evict=lambda k, v: evicted.append(k), pinned=lambda v: v in busy
    )
    parts.get("a")
    parts.get("b")
    parts.get("c")  # "a" is least recently used but pinned: "b" goes instead
    assert evicted == ["b"]
    assert parts.peek("a") == "a"
    busy.update({"c", "d"})
    parts.get("d")  # a, c pinned; d is the new key: nothing evictable, the map grows
    assert len(parts) == 3
    assert evicted == ["b"]
    busy.clear()
    parts.get("e")  # shrinks back to max_keys once states are idle again
    assert len(parts) == 2
    assert parts.peek("e") == "e"

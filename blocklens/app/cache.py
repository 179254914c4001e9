"""The bounded least-recently-used map (:class:`LRU`) that every cache of the app is.

Explanations, indexes, atlases and class concepts are each held in one, made in one place
(:class:`~blocklens.app.state.BlocklensApp`) with its bound: beyond it the least recently used item is forgotten.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable


class LRU:
    """At most ``maxsize`` items; :meth:`get` and :meth:`put` make an item the most recent, and a :meth:`put`
    beyond the bound forgets the least recent one. Thread-safe (one lock, held only for the dict operations)."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"an LRU holds at least 1 item, got maxsize={maxsize}")
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:  # does not make it recent
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list:
        """The keys held, least recent first."""
        with self._lock:
            return list(self._items)

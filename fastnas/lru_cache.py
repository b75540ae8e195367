"""A least-recently-used cache of tensors bounded by their total size in bytes."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable


class LRUCache:
    """Tensors (or dicts of tensors) by key, at most `budget` bytes, least recently used evicted first."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.used = 0
        self._items: OrderedDict = OrderedDict()

    @staticmethod
    def _size(value) -> int:
        tensors = value.values() if isinstance(value, dict) else (value,)
        return sum(t.numel() * t.element_size() for t in tensors)

    def get(self, key):
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        size = self._size(value)
        if size > self.budget:
            return
        if key in self._items:
            self.used -= self._size(self._items.pop(key))
        self._items[key] = value
        self.used += size
        while self.used > self.budget:
            _, old = self._items.popitem(last=False)
            self.used -= self._size(old)

    def drop(self, keep: Callable[[tuple], bool]) -> None:
        for key in [k for k in self._items if not keep(k)]:
            self.used -= self._size(self._items.pop(key))

    def __len__(self) -> int:
        return len(self._items)

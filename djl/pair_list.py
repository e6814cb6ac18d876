"""PairList: the ordered (key, value) pairs, keys repeated or None, that an Input's and an
Output's content is (``djl_python.pair_list.PairList``'s API)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any


class PairList:
    """An ordered list of (key, value) pairs where keys may repeat or be None."""

    __slots__ = ("keys", "values")

    def __init__(
        self,
        keys: Iterable[Any] | None = None,
        values: list[Any] | None = None,
        pair_list: Iterable[tuple[str | None, Any]] | None = None,
        pair_map: Mapping[str, Any] | None = None,
    ) -> None:
        """djl_python's signature: ``keys`` and ``values``, or ``pair_list``, or ``pair_map``.

        ``keys`` alone is taken as an iterable of (key, value) pairs.
        """
        self.keys: list[str | None] = []
        self.values: list[Any] = []
        if keys is not None and values is not None:
            key_list = list(keys)
            if len(key_list) != len(values):
                raise ValueError("PairList: keys and values differ in length")
            self.keys, self.values = key_list, list(values)
            return
        pairs = pair_list if pair_list is not None else keys
        if pair_map is not None:
            pairs = pair_map.items()
        for k, v in pairs or ():
            self.keys.append(k)
            self.values.append(v)

    def add(
        self,
        key: str | None = None,
        value: Any = None,
        index: int | None = None,
        pair: tuple[str | None, Any] | None = None,
    ) -> None:
        """Append (or insert at ``index``) one pair, given as key and value or ``pair``."""
        if pair is not None:
            key, value = pair
        if index is None:
            self.keys.append(key)
            self.values.append(value)
        else:
            self.keys.insert(index, key)
            self.values.insert(index, value)

    def add_all(self, pairs: PairList | Iterable[tuple[str | None, Any]]) -> None:
        for key, value in pairs:
            self.add(key, value)

    def size(self) -> int:
        return len(self.keys)

    def is_empty(self) -> bool:
        return not self.keys

    def key_at(self, index: int) -> str | None:
        return self.keys[index]

    def value_at(self, index: int) -> Any:
        return self.values[index]

    def get(self, key: str) -> Any:
        for k, v in zip(self.keys, self.values, strict=True):
            if k == key:
                return v
        return None

    def get_keys(self) -> list[str | None]:
        return self.keys

    def get_values(self) -> list[Any]:
        return self.values

    def items(self) -> Iterator[tuple[str | None, Any]]:
        return zip(self.keys, self.values, strict=True)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[tuple[str | None, Any]]:
        return self.items()

    def __repr__(self) -> str:
        return f"PairList({list(self.items())!r})"

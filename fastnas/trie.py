"""A prefix trie of integer sequences, so a batch of candidates computes each shared prefix once.

    root = build_trie([(0, 3, 1, 0), (0, 3, 2, 0)])
    root.children[3].key   # (0, 3): the prefix up to and including this node
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence


@dataclass(eq=False)
class Node:
    key: tuple[int, ...]                            # the sequence up to and including this node
    children: dict[int, "Node"] = field(default_factory=dict)
    leaf_of: list[tuple[int, ...]] = field(default_factory=list)   # full sequences ending here

    @property
    def depth(self) -> int:
        """Position of this node's element in its sequences (-1 for the empty root)."""
        return len(self.key) - 1

    @property
    def choice(self) -> int:
        return self.key[-1]

    def walk(self) -> Iterator["Node"]:
        """Every node below and including this one, parents before children (depth first)."""
        yield self
        for child in self.children.values():
            yield from child.walk()


def build_trie(sequences: Sequence[Sequence[int]]) -> Node:
    """The trie of `sequences`; children are visited in ascending choice order."""
    root = Node(())
    for seq in sorted(tuple(s) for s in sequences):
        node = root
        for i, c in enumerate(seq):
            child = node.children.get(c)
            if child is None:
                child = node.children[c] = Node(seq[:i + 1])
            node = child
        node.leaf_of.append(seq)
    return root

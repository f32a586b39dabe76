"""The plan's graph of steps: the part of ``networkx.DiGraph`` the planner and the engine use,
with the same names and behaviour (insertion-ordered nodes and neighbours, node attributes as
dicts), and ``to_networkx()`` for anything more.

Why not ``networkx.DiGraph`` itself: ``import networkx`` loads every algorithm and generator
it has, ~70 ms of CPU, on every run command, while it connects to the hosts; what a run needs of
a graph is adjacency and a few walks. networkx stays the tool for what is not that: the
planner asks it for the cycles of a runbook whose needs have one (``to_networkx``), and tests
check these walks against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    import networkx as nx


class NodeView(Mapping[str, dict[str, Any]]):
    """``graph.nodes``: the nodes in insertion order, ``nodes[n]`` their attribute dict, and
    ``nodes(data="index")`` (node, attribute) pairs, as networkx has them."""

    __slots__ = ("_node",)

    def __init__(self, node: dict[str, dict[str, Any]]) -> None:
        self._node = node

    def __getitem__(self, n: str) -> dict[str, Any]:
        return self._node[n]

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def __contains__(self, n: object) -> bool:
        return n in self._node

    @overload
    def __call__(self) -> Iterator[str]: ...
    @overload
    def __call__(self, data: str) -> Iterator[tuple[str, Any]]: ...
    def __call__(self, data: str | None = None) -> Iterator[Any]:
        if data is None:
            return iter(self._node)
        return ((n, attrs.get(data)) for n, attrs in self._node.items())


class Dag:
    """A directed graph of step ids (see the module's docstring). ``succ``/``pred`` map each
    node to its successors/predecessors, in the order their edges were added."""

    __slots__ = ("_node", "pred", "succ")

    def __init__(self) -> None:
        self._node: dict[str, dict[str, Any]] = {}
        self.succ: dict[str, dict[str, None]] = {}
        self.pred: dict[str, dict[str, None]] = {}

    # --- building -----------------------------------------------------------------------------
    def add_node(self, n: str, **attrs: Any) -> None:
        if n not in self._node:
            self._node[n] = {}
            self.succ[n] = {}
            self.pred[n] = {}
        self._node[n].update(attrs)

    def add_edge(self, u: str, v: str) -> None:
        if u not in self._node:
            self.add_node(u)
        if v not in self._node:
            self.add_node(v)
        self.succ[u][v] = None
        self.pred[v][u] = None

    def add_edges_from(self, edges: Iterable[tuple[str, str]]) -> None:
        for u, v in edges:
            self.add_edge(u, v)

    def remove_edges_from(self, edges: Iterable[tuple[str, str]]) -> None:
        for u, v in list(edges):
            if u in self.succ and self.succ[u].pop(v, 0) is None:
                del self.pred[v][u]

    def compose(self, other: Dag) -> Dag:
        """The union of both graphs, as ``networkx.compose``: ``other``'s node attributes win."""
        out = Dag()
        for g in (self, other):
            for n, attrs in g._node.items():
                out.add_node(n, **attrs)
        for g in (self, other):
            out.add_edges_from(g.edges)
        return out

    # --- reading ------------------------------------------------------------------------------
    @property
    def nodes(self) -> NodeView:
        return NodeView(self._node)

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(u, v) for u, children in self.succ.items() for v in children]

    def number_of_edges(self) -> int:
        return sum(map(len, self.succ.values()))

    def successors(self, n: str) -> Iterator[str]:
        return iter(self.succ[n])

    def predecessors(self, n: str) -> Iterator[str]:
        return iter(self.pred[n])

    def in_edges(self, n: str) -> list[tuple[str, str]]:
        return [(p, n) for p in self.pred[n]]

    def out_edges(self, n: str) -> list[tuple[str, str]]:
        return [(n, c) for c in self.succ[n]]

    def in_degree(self, n: str) -> int:
        return len(self.pred[n])

    def out_degree(self, n: str) -> int:
        return len(self.succ[n])

    def __contains__(self, n: object) -> bool:
        return n in self._node

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    # --- walks --------------------------------------------------------------------------------
    def _reach(self, start: str, step: Mapping[str, dict[str, None]]) -> set[str]:
        seen: set[str] = set()
        todo = list(step[start])
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(step[n])
        return seen

    def descendants(self, n: str) -> set[str]:
        """Every node reachable from ``n`` (``networkx.descendants``)."""
        return self._reach(n, self.succ) - {n}

    def ancestors(self, n: str) -> set[str]:
        """Every node from which ``n`` is reachable (``networkx.ancestors``)."""
        return self._reach(n, self.pred) - {n}

    def has_path(self, source: str, target: str) -> bool:
        """Whether ``target`` is ``source`` or reachable from it (``networkx.has_path``)."""
        if source == target:
            return True
        seen = {source}
        todo = [source]
        succ = self.succ
        while todo:
            for c in succ[todo.pop()]:
                if c == target:
                    return True
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        return False

    def is_acyclic(self) -> bool:
        """Whether the graph has no cycle (Kahn's count: linear)."""
        waiting = {n: len(p) for n, p in self.pred.items()}
        ready = [n for n, count in waiting.items() if count == 0]
        seen = 0
        while ready:
            n = ready.pop()
            seen += 1
            for c in self.succ[n]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    ready.append(c)
        return seen == len(waiting)

    def to_networkx(self) -> nx.DiGraph:
        """The same graph as a ``networkx.DiGraph`` (imports networkx)."""
        import networkx as nx

        g = nx.DiGraph()
        for n, attrs in self._node.items():
            g.add_node(n, **attrs)
        g.add_edges_from(self.edges)
        return g

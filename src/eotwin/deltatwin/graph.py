"""Workflow graph algorithms on plain ids: execution order, cycles, dependants (no files, no manifest)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def topological_order(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Kahn's order, ties broken by declaration order so runs are reproducible.

    Raises ValueError naming a cycle when there is one. Edges to unknown nodes are ignored
    (the validator reports them).
    """
    known = set(nodes)
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    indeg = dict.fromkeys(nodes, 0)
    for a, b in edges:
        if a in known and b in known:
            succ[a].append(b)
            indeg[b] += 1
    position = {n: i for i, n in enumerate(nodes)}
    ready = [n for n in nodes if indeg[n] == 0]
    order: list[str] = []
    while ready:
        ready.sort(key=position.__getitem__)
        node = ready.pop(0)
        order.append(node)
        for nxt in succ[node]:
            indeg[nxt] -= 1
            if indeg[nxt] == 0:
                ready.append(nxt)
    if len(order) != len(nodes):
        cycle = find_cycle(nodes, edges)
        raise ValueError("cycle: " + " -> ".join(cycle or []))
    return order


def find_cycle(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None; depth-first, in declaration order."""
    known = set(nodes)
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in known and b in known and b not in succ[a]:
            succ[a].append(b)
    state = dict.fromkeys(nodes, 0)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in succ[node]:
            if state[nxt] == 1:
                return [*stack[stack.index(nxt):], nxt]
            if state[nxt] == 0 and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in nodes:
        if state[node] == 0 and (found := visit(node)):
            return found
    return None


def dependants(start: str, edges: Iterable[tuple[str, str]]) -> set[str]:
    """Every node reachable from ``start`` (excluding ``start``): what a failure of ``start`` stops."""
    succ: dict[str, set[str]] = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in succ.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    seen.discard(start)
    return seen

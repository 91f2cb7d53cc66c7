"""No import circle between the project's modules: `python -m tests.support.import_cycles` (run by
`make lint`, so by CI) exits 1 naming every circle, 0 when there is none.

The graph is grimp's (the library import-linter checks its contracts with): every import statement
of the packages below, including those inside functions and under `if TYPE_CHECKING:`, since a
lazy import that closes a circle is still a circle. A circle is a strongly connected component of
more than one module; each is printed with one shortest loop through it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

import grimp

PACKAGES = ("common", "fixtures", "runners", "validation", "reports")


def import_graph(packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """module -> the project's modules it imports directly (external packages left out)."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    return {m: set(graph.find_modules_directly_imported_by(m)) & graph.modules for m in sorted(graph.modules)}


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself),
    each sorted, in sorted order (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return sorted(found)


def loop_through(graph: Mapping[str, set[str]], component: list[str]) -> list[str]:
    """A shortest loop from the component's first module back to itself, inside the component."""
    start, inside = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, set()) & inside):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise ValueError(f"{component}: not a circle")


def main(argv: list[str] | None = None) -> int:
    packages = tuple(argv if argv is not None else sys.argv[1:]) or PACKAGES
    graph = import_graph(packages)
    found = circles(graph)
    for component in found:
        print(f"import circle of {len(component)} modules: {' -> '.join(loop_through(graph, component))}"
              f" (all of them: {', '.join(component)}); move what both sides need into a module of its own",
              file=sys.stderr)
    if not found:
        print(f"no import circle among the {len(graph)} modules of {', '.join(packages)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

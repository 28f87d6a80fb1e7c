"""Tooling: list runtime import cycles among qwend's and qwend_lsp's modules.

Every import that can run counts: module-level ones and the lazy ones inside
functions (a lazy import still ties the two modules together at run time);
only ``if TYPE_CHECKING:`` blocks are left out. Importing ``a.b.c`` also
depends on the packages ``a`` and ``a.b``, except for modules inside them (a
package and its own modules are not a cycle). Exit 1 when a cycle exists.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOTS = {"qwend": Path("daemon/qwend"), "qwend_lsp": Path("lsp_server/qwend_lsp")}


def module_name(root: str, base: Path, path: Path) -> str:
    parts = [root, *path.relative_to(base).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    type_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for sub in ast.walk(stmt)
    }
    for sub in ast.walk(tree):
        if id(sub) in type_only:
            continue
        if isinstance(sub, ast.Import):
            found += [(alias.name, []) for alias in sub.names]
        elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
            found.append((sub.module, [alias.name for alias in sub.names]))
    return found


def graph() -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for root, base in ROOTS.items():
        for path in base.rglob("*.py"):
            modules[module_name(root, base, path)] = path
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in runtime_imports(ast.parse(path.read_text())):
            candidates = [target] + [f"{target}.{n}" for n in names]
            for candidate in candidates:
                parts = candidate.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    ancestor = name.startswith(prefix + ".")  # a package holds its modules
                    if prefix in modules and prefix != name and not ancestor:
                        edges[name].add(prefix)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def main() -> int:
    found = cycles(graph())
    for cycle in found:
        print(" -> ".join(cycle))
    print(f"{len(found)} runtime import cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

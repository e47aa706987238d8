"""The house rules of chatbot_server (issue #13), checked on the source, without importing it.

Every module under chatbot_server/ is parsed with `ast`; every import counts, including those
under `if TYPE_CHECKING:` and inside functions. The rules:

- no import cycle among chatbot_server modules (a package's __init__ importing its own
  submodules is an ordinary edge; a cycle through it still counts);
- the arrows of RULES below: what each part may not import (docs/architecture.md has the same
  table, with the diagram of who imports whom);
- no module longer than MAX_LINES lines;
- no reaching into private internals (asyncio's or aiohttp's, or ours named like them).

See docs/architecture.md.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from pathlib import Path

import pytest

PKG = "chatbot_server"
SRC = Path(__file__).resolve().parents[1] / PKG
MAX_LINES = 400
#: The composition root, "app" in RULES: the package's __init__ imports app, so it counts too.
COMPOSITION_ROOT = {PKG, f"{PKG}.app", f"{PKG}.cli", f"{PKG}.workers", f"{PKG}.gunicorn_app", f"{PKG}.__main__"}
LEAVES = ("errors", "jsonutil", "masking", "protocol", "messages", "redis_url", "identity")

#: part: (what it may not import, exceptions to that); "*" is all of chatbot_server outside the part.
RULES: dict[str, tuple[set[str], set[str]]] = {
    "layers": ({"config", "sockets", "chat", "agents", "store", "app", "keys"}, set()),
    "store": ({"config", "sockets", "chat", "agents", "layers", "app"}, set()),
    "bots": ({"*"}, {"errors", "jsonutil", "masking"}),
    "sockets": ({"chat", "agents", "store", "bots", "app"}, set()),
    "chat": ({"agents", "api", "app"}, set()),
    "agents": ({"chat", "app", "api"}, {"chat.holding"}),
    "api": ({"chat", "agents", "app"}, {"chat.holding"}),
    "ops": ({"chat", "agents", "api", "app"}, set()),
    "leaves": ({"*"}, {*LEAVES, "sockets.codes"}),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _known(name: str) -> str | None:
    """The module `name` is, or the nearest package module containing it (None: not ours)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    targets: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(_known(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import sub` imports the submodule pkg.sub
                targets.add(_known(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else _known(base))
    return {t for t in targets if t is not None and t != module}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _is(module: str, part: str) -> bool:
    if part == "app":
        return module in COMPOSITION_ROOT
    if part == "leaves":
        return any(_is(module, leaf) for leaf in LEAVES)
    return part == "*" or module == f"{PKG}.{part}" or module.startswith(f"{PKG}.{part}.")


def _cycles() -> list[list[str]]:
    """The shortest cycle back to each module that is on one (breadth first), each cycle once."""
    found: dict[frozenset[str], list[str]] = {}
    for start in sorted(GRAPH):
        paths, seen = deque([[start]]), {start}
        while paths:
            path = paths.popleft()
            if start in GRAPH[path[-1]]:
                found.setdefault(frozenset(path), [*path, start])
                break
            for w in sorted(GRAPH[path[-1]] - seen):
                seen.add(w)
                paths.append([*path, w])
    return list(found.values())


def test_no_import_cycle() -> None:
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize("part", list(RULES))
def test_forbidden_arrows(part: str) -> None:
    forbidden, allowed = RULES[part]
    broken = sorted(
        f"{module} imports {target}"
        for module in GRAPH
        if _is(module, part)
        for target in GRAPH[module]
        if not _is(target, part) and any(_is(target, f) for f in forbidden) and not any(_is(target, a) for a in allowed)
    )
    assert not broken, f"{part}/ may not import these:\n" + "\n".join(broken)


def test_no_module_over_max_lines() -> None:
    sizes = {module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in MODULES.items()}
    over = sorted(f"{MODULES[m].relative_to(SRC.parent)}: {n} lines" for m, n in sizes.items() if n > MAX_LINES)
    assert not over, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(over)


PRIVATE = re.compile(r"_asyncio_future_blocking|\.max_size\b|\._(writer|transport)\b")


def test_no_private_internals() -> None:
    hits = [
        f"{path.relative_to(SRC.parent)}:{number}: {line.strip()}"
        for path in sorted(MODULES.values())
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not hits, "private internals used:\n" + "\n".join(hits)

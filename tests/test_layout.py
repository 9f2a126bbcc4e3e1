"""The layout's rules, checked on the source: rooms by job, dependencies one way, small files.

The ground (``config``, ``domain``, ``errors``) is imported by everyone; ``journal`` sits above
it; the stage rooms above the journal; ``daemon`` and ``cli`` on top. No two rooms import
each other, no module import circle exists, and no file is over 450 lines.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "agent"
GROUND = {"config", "domain", "errors"}
TOP = {"daemon", "cli", "__main__"}
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``agent.*`` module that ``path`` imports, lazily inside functions included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "agent":
                found.update(f"agent.{a.name}" for a in node.names)
            elif node.module.startswith("agent."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("agent."))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in AGENT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        # ``from agent.x import y`` may name module agent.x.y or attribute y of agent.x
        graph[name] = {m for m in _imports(path) if m in modules} | {
            m.rsplit(".", 1)[0] for m in _imports(path) if m not in modules
        }
    return graph


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "agent"


def test_rooms_never_import_each_other_both_ways() -> None:
    arrows: dict[str, set[str]] = defaultdict(set)
    for src, targets in _graph().items():
        for dst in targets:
            if _room(src) != _room(dst):
                arrows[_room(src)].add(_room(dst))
    ties = sorted((a, b) for a in arrows for b in arrows[a] if a < b and a in arrows.get(b, set()))
    assert ties == [], f"rooms importing each other: {ties}"


def test_the_ground_and_the_rooms_never_import_the_top() -> None:
    upward = sorted(
        (src, dst)
        for src, targets in _graph().items()
        for dst in targets
        if _room(dst) in TOP and _room(src) not in TOP
    )
    assert upward == [], f"imports of daemon or cli from below: {upward}"


def test_the_ground_imports_only_the_ground() -> None:
    bad = sorted(
        (src, dst)
        for src, targets in _graph().items()
        if _room(src) in GROUND
        for dst in targets
        if _room(dst) not in GROUND
    )
    assert bad == [], f"the ground reaches up: {bad}"


def test_journal_imports_no_stage_room() -> None:
    bad = sorted(
        (src, dst)
        for src, targets in _graph().items()
        if _room(src) == "journal"
        for dst in targets
        if _room(dst) not in GROUND | {"journal"}
    )
    assert bad == [], f"the journal reaches into a stage room: {bad}"


def test_no_module_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, set())):
            if nxt == node or nxt == "agent":
                continue  # a package's own __init__ re-exports are not a circle
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt):], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == [], f"import circles: {circles}"


def test_no_file_over_450_lines() -> None:
    long = sorted(
        (str(p.relative_to(ROOT)), n)
        for folder in ("agent", "kernels")
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text("utf-8").splitlines())) > MAX_LINES
    )
    assert long == [], f"files over {MAX_LINES} lines: {long}"


def test_agent_has_few_top_level_modules_and_rooms_by_job() -> None:
    modules = sorted(p.name for p in AGENT.glob("*.py"))
    rooms = sorted(p.parent.name for p in AGENT.glob("*/__init__.py"))
    assert len(modules) <= 12, modules
    assert {"receive", "series", "recon", "qc", "triage", "verdict", "forward", "alerts",
            "journal", "operator"} <= set(rooms), rooms  # fmt: skip


def test_every_room_says_what_it_owns_and_may_import() -> None:
    silent = [
        p.parent.name
        for p in AGENT.glob("*/__init__.py")
        if "import" not in (ast.get_docstring(ast.parse(p.read_text("utf-8"))) or "")
    ]
    assert silent == [], f"rooms whose docstring does not say what they may import: {silent}"

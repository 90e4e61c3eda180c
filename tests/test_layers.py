"""Layering: worldmodel (the core) <- games <- memory <- simulator, only the frontends import
pygame, and no first-party import cycle.

The core imports no game, memory or simulator module; a game imports only the core (never memory
or simulator); memory does not import simulator (statically, including importlib / `__import__`
strings, and at run time); only simulator/window.py and simulator/replay.py import pygame; and
the first-party import graph (every import, at module level or inside a function) has no cycle.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

# package -> the first-party packages it must never import
FORBIDDEN = {"worldmodel": {"games", "memory", "simulator"}, "games": {"memory", "simulator"},
             "memory": {"simulator"}}
FIRST_PARTY = ("worldmodel", "games", "memory", "simulator")
PYGAME_IMPORTERS = {"simulator/window.py", "simulator/replay.py"}
DYNAMIC_IMPORTS = {"import_module", "__import__", "find_spec"}
MODULE_REF = re.compile(r"(games|memory|simulator|worldmodel)(\.\w+)+(:\w+)?")

IMPORT_ALL = """
import importlib, pkgutil, sys
pkg = importlib.import_module({pkg!r})
names = [pkg.__name__] + [i.name for i in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(len(names), " ".join(names))
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


def run(code: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               PYGAME_HIDE_SUPPORT_PROMPT="1")
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports: import statements, and the strings importlib /
    `__import__` could be handed: arguments of those calls, and any string (not a docstring)
    that reads as a dotted module path or a "module:function" reference."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.add(node.module or "")
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in DYNAMIC_IMPORTS:
                out.update(a.value.split(":")[0] for a in node.args
                           if isinstance(a, ast.Constant) and isinstance(a.value, str))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings and MODULE_REF.fullmatch(node.value)):
            out.add(node.value.split(":")[0])
    return out


def sources(*packages: str) -> list[Path]:
    return [p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_static_imports_follow_the_layers():
    bad = []
    for pkg, forbidden in FORBIDDEN.items():
        for path in sources(pkg):
            hits = {m for m in imported_modules(path) if m.split(".")[0] in forbidden}
            bad += [f"{path.relative_to(ROOT)} imports {m}" for m in sorted(hits)]
    assert not bad, "\n".join(bad)


def test_the_probe_sees_dynamic_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib\nimportlib.import_module('memory.config')\n"
                     "__import__('simulator.session')\nREF = {'m': 'memory.lora:add'}\n"
                     "NOT = 'memory.lr=3e-4'\n")
    assert imported_modules(probe) == {"importlib", "memory.config", "simulator.session",
                                       "memory.lora"}


def test_only_the_frontends_import_pygame():
    importers = {str(p.relative_to(ROOT)) for p in [ROOT / "run_sim.py",
                                                    *sources("worldmodel", "games", "memory", "simulator")]
                 if any(m.split(".")[0] == "pygame" for m in imported_modules(p))}
    assert importers <= PYGAME_IMPORTERS, importers - PYGAME_IMPORTERS


def test_importing_every_module_pulls_in_no_higher_layer():
    for pkg, forbidden in FORBIDDEN.items():
        first, loaded = run(IMPORT_ALL.format(pkg=pkg)).splitlines()[:2]
        count, *names = first.split()
        assert int(count) >= 8, names
        bad = set(loaded.split()) & (forbidden | {"pygame"})
        assert not bad, f"importing {pkg} loaded {bad}"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """First-party module -> the first-party modules it imports (any level, any form)."""
    files = {module_name(p): p for p in sources(*FIRST_PARTY)}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps = set()
        for m in imported_modules(path):
            # `from pkg import mod` names a module too: resolve to the longest known prefix
            while m and m not in files:
                m = m.rpartition(".")[0]
            if m and m != name and m.split(".")[0] in FIRST_PARTY:
                deps.add(m)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_core_finds_games_only_through_the_registry():
    """The core names no game, yet loads one by name (the entry points) once asked."""
    code = ("import sys, worldmodel.checkpoint, worldmodel.rollout, worldmodel.training.train\n"
            "assert not any(m.split('.')[0] == 'games' for m in sys.modules), 'imported a game'\n"
            "from worldmodel.game import get_game\n"
            "g = get_game('crafter')\n"
            "print(g.name, g.action_space.name, 'games.crafter' in sys.modules)")
    assert run(code).split() == ["crafter", "crafter", "True"]


CHECK_SECTIONS = """
import sys
from pathlib import Path
from worldmodel.config import ConfigError, load_config

def fails(path, needle):
    try:
        load_config(path)
    except ConfigError as e:
        return needle in str(e)
    return False

mem, typo = Path(sys.argv[1]), Path(sys.argv[2])
load_config(mem)  # worldmodel alone: the section is left to its owner
assert "memory" not in sys.modules
assert fails(typo, "config.memroy")
import memory.config  # memory in use: its section is checked
assert fails(mem, "memory.nope") and fails(typo, "config.memroy")
print("OK")
"""


def test_a_memory_section_is_checked_once_memory_is_in_use(tmp_path):
    mem, typo = tmp_path / "mem.yaml", tmp_path / "typo.yaml"
    mem.write_text("memory:\n  rank: 4\n  nope: 1\n")
    typo.write_text("memroy:\n  rank: 4\n")
    assert run(CHECK_SECTIONS, str(mem), str(typo)).strip() == "OK"


def test_entry_points_report_bad_input_without_a_traceback():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "worldmodel.training.train", "--config", "configs/tiny.yaml",
                        "model.wings=3"], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "error: unknown key(s) config.model.wings" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "worldmodel.evaluation.bench", "--checkpoint", "no/such/dir"],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr

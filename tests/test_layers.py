"""Layering: worldmodel <- memory <- simulator, and only the frontends import pygame.

worldmodel imports neither memory nor simulator, memory does not import simulator (statically,
including importlib / `__import__` strings, and at run time), and only simulator/window.py and
simulator/replay.py import pygame.
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
FORBIDDEN = {"worldmodel": {"memory", "simulator"}, "memory": {"simulator"}}
PYGAME_IMPORTERS = {"simulator/window.py", "simulator/replay.py"}
DYNAMIC_IMPORTS = {"import_module", "__import__", "find_spec"}
MODULE_REF = re.compile(r"(memory|simulator|worldmodel)(\.\w+)+(:\w+)?")

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
                                                    *sources("worldmodel", "memory", "simulator")]
                 if any(m.split(".")[0] == "pygame" for m in imported_modules(p))}
    assert importers <= PYGAME_IMPORTERS, importers - PYGAME_IMPORTERS


def test_importing_every_module_pulls_in_no_higher_layer():
    for pkg, forbidden in FORBIDDEN.items():
        first, loaded = run(IMPORT_ALL.format(pkg=pkg)).splitlines()[:2]
        count, *names = first.split()
        assert int(count) >= 10, names
        bad = set(loaded.split()) & (forbidden | {"pygame"})
        assert not bad, f"importing {pkg} loaded {bad}"


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
    r = subprocess.run([sys.executable, "-m", "worldmodel.train", "--config", "configs/tiny.yaml",
                        "model.wings=3"], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "error: unknown key(s) config.model.wings" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "worldmodel.bench", "--checkpoint", "no/such/dir"],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr

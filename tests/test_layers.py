"""Layering: the model and memory packages never import pygame (only the window does)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

IMPORT_ALL = """
import importlib, pkgutil, sys
import worldmodel, memory
names = []
for pkg in (worldmodel, memory):
    names.append(pkg.__name__)
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        names.append(info.name)
for name in names:
    importlib.import_module(name)
print(len(names), " ".join(names))
print("PYGAME" if "pygame" in sys.modules else "CLEAN")
import pygame  # the probe itself must notice pygame once something imports it
print("PYGAME" if "pygame" in sys.modules else "CLEAN")
"""


def run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               PYGAME_HIDE_SUPPORT_PROMPT="1")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_worldmodel_and_memory_never_import_pygame():
    out = run(IMPORT_ALL).splitlines()
    count, *names = out[0].split()
    assert int(count) >= 10 and "worldmodel.train" in names and "worldmodel.rollout" in names
    assert out[1] == "CLEAN", "pygame was imported by one of: " + " ".join(names)
    assert out[-1] == "PYGAME"


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

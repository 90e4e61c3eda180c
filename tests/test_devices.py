"""Device-agnostic code: every entry point picks CUDA when it is present, so nothing may assume
tensors live on the host.

Each entry point's own tests run it on every device in `conftest.DEVICES` (CUDA where present,
the CPU always): memory.revisit, memory.probe, memory.train_slowfast and memory.fps in
tests/memory/test_revisit.py, worldmodel.evaluation.evaluate and worldmodel.evaluation.bench in their tests, the
session in tests/memory/test_memory_session.py. On a CPU-only machine those cannot see a
device tensor reaching numpy, so this checks the source for it.
"""

from __future__ import annotations

import ast

from conftest import ROOT


def host_copies_missing(path) -> list[int]:
    """Lines where `.numpy()` is called on anything but a `.cpu()` result."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "numpy"):
            recv = node.func.value
            if not (isinstance(recv, ast.Call) and isinstance(recv.func, ast.Attribute)
                    and recv.func.attr == "cpu"):
                bad.append(node.lineno)
    return bad


def test_numpy_only_reads_tensors_copied_to_the_host():
    paths = [ROOT / "run_sim.py"] + [p for pkg in ("worldmodel", "memory", "simulator")
                                     for p in sorted((ROOT / pkg).rglob("*.py"))]
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in paths for line in host_copies_missing(p)]
    assert not bad, "`.numpy()` without `.cpu()` (a CUDA tensor would raise): " + ", ".join(bad)

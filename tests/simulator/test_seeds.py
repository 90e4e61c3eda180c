"""The real-game seed ranges (simulator/seeds.py): one table, pairwise disjoint, used by every
piece of code that picks seeds."""

from __future__ import annotations

import ast
import itertools

import pytest

from conftest import ROOT
from simulator import collect, planner
from simulator.seeds import SEED_RANGES, SPLIT_SEED_BASE, SeedRange


def test_the_ranges_are_pairwise_disjoint():
    for (a, ra), (b, rb) in itertools.combinations(SEED_RANGES.items(), 2):
        assert ra.stop <= rb.first or rb.stop <= ra.first, f"{a} {ra} overlaps {b} {rb}"
    assert all(r.size > 0 and r.first >= 0 for r in SEED_RANGES.values())


def test_collect_and_the_planner_draw_from_their_own_ranges():
    assert collect.SPLIT_SEED_BASE is SPLIT_SEED_BASE
    for split, first in SPLIT_SEED_BASE.items():
        assert first == SEED_RANGES[split].first
    owners = [name for name, r in SEED_RANGES.items() if planner.SEED_BASE in r]
    assert owners == ["plan"], owners  # not a world any collected split (training) uses


def test_a_seed_index_past_the_end_is_an_error():
    r = SeedRange(10, 3)
    assert [r.seed(i) for i in range(3)] == [10, 11, 12] and 12 in r and 13 not in r
    with pytest.raises(ValueError, match="outside"):
        r.seed(3)


def test_no_other_code_hard_codes_a_seed_base():
    """A seed base written anywhere but the table (a literal of a million or more) would escape
    the disjointness test."""
    bad = []
    for path in [ROOT / "run_sim.py", *sorted((ROOT / "simulator").rglob("*.py")),
                 *sorted((ROOT / "memory").rglob("*.py"))]:
        if path.name == "seeds.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Constant) and type(node.value) is int
                    and node.value >= 1_000_000):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert not bad, bad

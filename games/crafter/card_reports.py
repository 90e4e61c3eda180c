"""The reports behind Crafter's model card (`games.crafter.model_card`): which ones it reads,
the targets it judges figures by, and `Reports.get`, the one way a figure gets into the card (a
report that names no command, or a missing key, is an error, never a blank)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from worldmodel.game import GameError

OPTIONAL = {"bench": "bench.json", "revisit": "revisit.json",
            "revisit_trip": "revisit_trip/revisit.json",
            "revisit_loop": "revisit_loop/revisit.json", "memory_fps": "memory_fps/fps.json",
            "plan": "plan.json"}
# Issue 12's targets for a world that holds together (issue 11's metrics are the judge).
PERMANENCE_TARGETS = {"1": 0.95, "4": 0.90, "16": 0.80, "64": 0.60}
ALL_CELLS_TARGET_H16 = 0.97
SMEAR_TARGET = 0.01
FPS_TARGET = 25.0
BATCH_SPEEDUP_TARGET = 3.0


class ModelCardError(GameError):
    """A report or figure the card needs is missing or cannot be traced to a command."""


class Reports:
    """The JSON reports behind a card; `get(name, *keys)` is the one way a figure gets in."""

    def __init__(self, paths: dict[str, Path], root: Path):
        self.data: dict[str, dict] = {}
        self.paths: dict[str, str] = {}
        for name, path in paths.items():
            try:
                report = json.loads(Path(path).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ModelCardError(f"report {name} ({path}) cannot be read: {e}") from e
            if not isinstance(report, dict) or not report.get("command"):
                raise ModelCardError(f"report {name} ({path}) names no command that wrote it: "
                                     "its figures cannot be published")
            self.data[name] = report
            try:
                self.paths[name] = str(Path(path).resolve().relative_to(root.resolve()))
            except ValueError:
                self.paths[name] = str(path)

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, *keys: str | int) -> Any:
        if name not in self.data:
            raise ModelCardError(f"the card needs report {name}, which was not given")
        v: Any = self.data[name]
        for k in keys:
            try:
                v = v[k]
            except (KeyError, IndexError, TypeError):
                raise ModelCardError(f"report {name} ({self.paths[name]}) has no "
                                     f"{'/'.join(map(str, keys))}") from None
        return v

    def source(self, name: str) -> str:
        return f"Command: `{self.get(name, 'command')}`; report: `{self.paths[name]}`."


def num(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def ordered(d: dict) -> list:
    """A report's per-horizon or per-bucket keys ("16", "5-16") in numeric order (reports are
    written with sorted keys, which puts "128" before "16")."""
    return sorted(d, key=lambda k: int(str(k).split("-")[0]))


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "missed")

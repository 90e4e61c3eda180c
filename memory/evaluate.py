"""`python -m memory.evaluate ARGS`: worldmodel.evaluation.evaluate with every world's view memory on.

The same evaluation, arguments and report as `python -m worldmodel.evaluation.evaluate` (see there), but
each rolled-out world records what it shows in its game's view memory (`Game.view_memory`) and is
conditioned on
it, as a session with memory on: what a player with the memory switched on sees. The model must
have one (`model.view_memory`).
"""

from __future__ import annotations

from typing import Any

from worldmodel.evaluation import evaluate
from worldmodel.cli import run_cli


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return evaluate.main(argv, view_memory=True, module="memory.evaluate")


if __name__ == "__main__":
    run_cli(main)

"""What every JSON report carries so that its figures can be reproduced and trusted: the command
that wrote it, and intervals where samples are few."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def command_line(module: str | None, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces this run: `python -m MODULE ARGS` (argv: the arguments main()
    was given, or the process's own when None); module None: `python SCRIPT ARGS` of a script
    such as run_sim.py."""
    if module is None:
        return " ".join(["python", *map(shlex.quote, [Path(sys.argv[0]).name, *sys.argv[1:]])])
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", "-m", module, *map(shlex.quote, args)])


def bootstrap_interval(values: Sequence[float] | np.ndarray, level: float = 0.9,
                       draws: int = 2000, seed: int = 0) -> list[float] | None:
    """A percentile bootstrap interval of the mean of per-sample values (episodes, trips): the
    spread a figure from this few samples could have had. None for fewer than 2 samples."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (draws, len(x)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]

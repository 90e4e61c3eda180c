"""Hashes of the shipped default's frames under fixed seeds and actions, memory off and on: a
refactor that must not change what the model draws keeps both the same on one machine.

    python scripts/golden_frames.py        (prints "memory off HASH" and "memory on HASH")

Two worlds from real seed 3, 40 steps of random actions from np.random.RandomState(0); the hash
is the first 16 hex digits of the SHA-256 of the stacked frames. Floating point differs between
CPUs and between thread counts (sums split differently), so the script runs on 2 threads:
compare hashes taken on the same machine.
"""

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from simulator.session import WorldSession  # noqa: E402

torch.set_num_threads(2)
for memory in (False, True):
    with WorldSession.load(batch=2) as session:
        session.set_memory(memory)
        session.reset(seed=3)
        rng = np.random.RandomState(0)
        frames = [np.asarray(session.step(rng.randint(0, 17, 2))) for _ in range(40)]
    print(f"memory {'on' if memory else 'off'}", hashlib.sha256(np.stack(frames).tobytes()).hexdigest()[:16])

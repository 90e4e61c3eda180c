"""Live frame rate with memory off vs on: `python -m memory.fps --checkpoint runs/crafter`.

Runs the session's frame loop (swap adapter, one frame, hand it to the worker: what
`WorldSession.step` does) for `--rounds` alternating blocks of `--frames` frames with memory off
and on, so both see the same machine load, and reports the median fps of each, the ratio, the
slowest frame, the most time a frame spent in memory hooks (it never waits for an update: the
swap is a try-lock and a copy), and how many updates the worker managed. After each memory-on
block it also records the process's RSS and the worker's mean update time over that block, so a
long session (`--rounds 84 --frames 120`: 10,080 frames with memory on) shows whether memory or
update cost grows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memory.config import load_memory_config
from memory.episodic import EpisodicMemory
from worldmodel.checkpoint import load_checkpoint
from worldmodel.cli import common_flags, run_cli
from worldmodel.config import to_dict
from worldmodel.data import list_episodes, load_episode
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.evaluation.reports import command_line
from worldmodel.recall import has_view_memory, make_view_memory
from worldmodel.rollout import Rollout
from worldmodel.device import pick_device

MOVES = (1, 2, 3, 4)


def rss_mb() -> float:
    """This process's resident set size (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def measure(model, cfg, mcfg, context: torch.Tensor, frames: int, rounds: int,
            seed: int = 0, moves: tuple[int, ...] = MOVES) -> dict[str, Any]:
    use_view, use_lora = mcfg.uses(has_view_memory(model, cfg))
    memory = EpisodicMemory(model, cfg, mcfg, threaded=True, enabled=False) if use_lora else None
    ro = Rollout(model, cfg, seed=seed)
    if use_view:
        # As in a session: the view memory records every frame; memory on conditions on it.
        ro.view = make_view_memory(model, cfg, 1, ro.context, ro.device)
    if memory is None and ro.view is None:
        raise ValueError(f"no memory store to measure: memory.stores is {mcfg.stores!r} and the "
                         f"model has no view memory")
    rng = np.random.default_rng(seed)
    fps: dict[str, list[float]] = {"off": [], "on": []}
    worst = {"off": 0.0, "on": 0.0}
    updates_on = 0
    time_on = 0.0
    rss, update_ms = [], []  # after each memory-on block
    ro.reset(context)
    if memory is not None:  # once: a reset drops the update in flight; play is one long episode
        memory.reset(context)
    worker = memory.worker if memory is not None else None
    try:
        for r in range(rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                on = mode == "on"
                if memory is not None:
                    memory.set_enabled(on)
                    ro.model = memory.model if on else model
                if ro.view is not None:
                    ro.view.set_on(on, [0])
                u0, s0 = (worker.updates, worker.update_s_total) if worker else (0, 0.0)
                t0 = time.perf_counter()
                for _ in range(frames):
                    act = torch.tensor([int(rng.choice(moves))])
                    s = time.perf_counter()
                    if on and memory is not None:
                        memory.before_step()
                    frame = ro.step(act)
                    if on and memory is not None:
                        memory.observe(frame[:, None], act[:, None])
                    to_uint8(frame).cpu().numpy()
                    worst[mode] = max(worst[mode], time.perf_counter() - s)
                el = time.perf_counter() - t0
                fps[mode].append(frames / el)
                if on:
                    n_up = worker.updates - u0 if worker else 0
                    updates_on += n_up
                    time_on += el
                    rss.append(rss_mb())
                    if worker:
                        update_ms.append(1000 * (worker.update_s_total - s0) / max(1, n_up))
    finally:
        if memory is not None:
            memory.close()
    off, on = statistics.median(fps["off"]), statistics.median(fps["on"])
    return {"fps_off": off, "fps_on": on, "ratio": on / off, "fps_off_rounds": fps["off"],
            "fps_on_rounds": fps["on"], "worst_frame_ms_off": worst["off"] * 1000,
            "worst_frame_ms_on": worst["on"] * 1000,
            "stores": (["view"] if ro.view is not None else []) + (["lora"] if memory else []),
            "hook_ms_max": memory.hook_ms_max if memory else 0.0,
            "worker_updates_per_s": updates_on / max(time_on, 1e-9),
            "worker_update_ms_last": worker.update_s * 1000 if worker else 0.0,
            "frames_per_update": (frames * rounds) / max(1, updates_on) if worker else None,
            "torch_threads": torch.get_num_threads(), "frames_on": frames * rounds,
            "rss_mb_rounds": rss, "update_ms_rounds": update_ms,
            "rss_growth_mb": rss[-1] - rss[0] if rss else 0.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    shared = common_flags(checkpoint={"required": True}, device=True,
                          threads={"help": "torch threads of the frame loop (0: default)"},
                          out={"help": "write fps.json here"})
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/crafter_revisit", help="an episode for the context")
    p.add_argument("--frames", type=int, default=60, help="frames per block")
    p.add_argument("--rounds", type=int, default=4, help="off/on block pairs")
    p.add_argument("--memory-config", help="YAML with a memory: section")
    p.add_argument("--actions", type=int, nargs="+", default=list(MOVES),
                   help="the action indices played at random (default: Crafter's four moves; "
                        "Minetest: 1 2 3 4 5 6 7 8, its moves, turns and tilts)")
    p.add_argument("overrides", nargs="*", help="memory settings, e.g. update_every=4 worker_nice=10")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg = load_checkpoint(args.checkpoint, pick_device(args.device))
    mcfg = load_memory_config(args.memory_config, args.overrides)
    ep = load_episode(list_episodes(args.data)[0])
    n = cfg.data.window - 1
    context = to_float(torch.from_numpy(ep.frames[:n]))[None].to(next(model.parameters()).device)
    res = measure(model, cfg, mcfg, context, args.frames, args.rounds, moves=tuple(args.actions))
    res["actions"] = args.actions
    res["memory"] = to_dict(mcfg)
    res["command"] = command_line("memory.fps", argv)
    print(json.dumps({k: v for k, v in res.items() if k != "memory"}, indent=1))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "fps.json").write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    run_cli(main)

"""Revisit protocols for the first-person model: does the view come back the same?

    python -m simulator.collect --game minetest --policy full_turn --split heldout --first 100 \\
        --episodes 8 --length 31 --env label_every=1 --out data/minetest_revisit/full_turn
    (likewise turn_away_back 35, out_and_back 47, look_down_up 19 steps)
    python -m memory.revisit_3d --checkpoint runs/minetest_recall \\
        --trips data/minetest_revisit --out assets/minetest/eval/revisits

Each trip is one of `policies.PROTOCOLS` recorded in the real game: `CONTEXT_STEPS` noops, then a
fixed trip whose last frame faces a view seen long before (after a full turn; after turning away
and back; back at the start of an out-and-back walk; after looking down and up). From the real
context (the first CONTEXT_STEPS + 1 frames) the model rolls the trip under the same actions in
four modes, with the same sampler noise:

    off    no memory
    view   the recall memory (worldmodel.recall; a model trained with model.recall)
    lora   the temporal LoRA fast-learned inline from the frames drawn (memory/episodic.py)
    both   the two together

On the revisit frame it reports, per mode: PSNR against the real game's frame; label agreement
(the per-pixel labeller on the imagined frame) with the real game's labels of that frame and of the
earlier frame it revisits; the labeller's reading of it against its reading of the real earlier
frame (read_vs_earlier_read: the labeller's own errors cancel); and PSNR against the model's own
earlier frame. The real game's own
consistency (its revisit frame against its earlier frame) is the ceiling. Gains are each mode
minus off. Outputs: revisits.json and revisit_strip.png (earlier frame, revisit frame, per mode).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from games.minetest.labeller import Labeller
from games.minetest.policies import CONTEXT_STEPS, PROTOCOLS
from memory.config import MemoryConfig, load_memory_config
from memory.episodic import EpisodicMemory
from worldmodel.checkpoint import load_checkpoint
from worldmodel.cli import common_flags, run_cli
from worldmodel.config import Config
from worldmodel.data import list_episodes, load_episode
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.data.episode import Episode, write_json_atomic
from worldmodel.device import pick_device
from worldmodel.dynamics import Denoiser
from worldmodel.evaluation.metrics import psnr
from worldmodel.evaluation.prediction import frame_actions
from worldmodel.evaluation.reports import command_line
from worldmodel.recall import has_view_memory, make_view_memory
from worldmodel.rollout import Rollout

MODES = ("off", "view", "lora", "both")
ROOT = Path(__file__).resolve().parents[1]


def load_trips(root: str | Path) -> dict[str, list[Episode]]:
    """The recorded protocol trips under `root` (any depth), by protocol (meta "policy")."""
    out: dict[str, list[Episode]] = {}
    for folder in sorted({p for p in Path(root).rglob("meta.json")}):
        ep = load_episode(folder.parent)
        name = ep.meta.get("policy")
        if name in PROTOCOLS and ep.labels is not None:
            out.setdefault(name, []).append(ep)
    if not out:
        raise ValueError(f"no revisit protocol trips with labels under {root} (record them with "
                         f"python -m simulator.collect --policy full_turn ... --env label_every=1)")
    return out


def revisit_index(name: str) -> tuple[int, int]:
    """(earlier frame, revisit frame) of a protocol's trip: frame CONTEXT_STEPS is the last
    context frame; the trip's last frame revisits the frame after its first `ref` steps."""
    trip, ref = PROTOCOLS[name]
    return CONTEXT_STEPS + ref, CONTEXT_STEPS + len(trip)


def roll(model: Denoiser, cfg: Config, ep: Episode, mode: str, seed: int, mcfg: MemoryConfig
         ) -> np.ndarray:
    """The trip's frames (uint8): the real context, then one imagined frame per real action."""
    n_ctx = CONTEXT_STEPS + 1
    device = next(model.parameters()).device
    ctx = to_float(torch.from_numpy(ep.frames[:n_ctx]))[None].to(device)
    ctx_act = torch.from_numpy(frame_actions(ep, 0, n_ctx))[None]
    memory = None
    if mode in ("lora", "both"):
        memory = EpisodicMemory(model, cfg, mcfg, threaded=False, enabled=True)
    ro = Rollout(memory.model if memory is not None else model, cfg, seed=seed)
    if has_view_memory(model, cfg):
        ro.view = make_view_memory(model, cfg, 1, ro.context, device)
        ro.view.set_on(mode in ("view", "both"), [0])
    ro.reset(ctx, ctx_act)
    if memory is not None:
        memory.reset(ctx, ctx_act)
    out = list(ep.frames[:n_ctx])
    for j in range(n_ctx, len(ep.frames)):
        act = torch.tensor([[int(ep.actions[j - 1])]])
        if memory is not None:
            memory.before_step()
        frame = ro.step(act[:, 0])
        if memory is not None:
            memory.observe(frame[:, None], act)
        out.append(to_uint8(frame[0]).cpu().numpy())
    return np.stack(out)


def score(ep: Episode, frames: np.ndarray, name: str, labeller: Labeller) -> dict[str, float]:
    ref, last = revisit_index(name)
    lab = labeller.predict(frames[[ref, last]])
    real_ref = labeller.predict(ep.frames[ref:ref + 1])[0]
    return {"psnr_vs_real": float(psnr(frames[last], ep.frames[last])),
            "psnr_vs_own_earlier": float(psnr(frames[last], frames[ref])),
            "labels_vs_real": float((lab[1] == ep.labels[last]).mean()),
            "labels_vs_earlier": float((lab[1] == ep.labels[ref]).mean()),
            # both read by the labeller (its own errors cancel where the frames agree)
            "read_vs_earlier_read": float((lab[1] == real_ref).mean())}


def real_ceiling(ep: Episode, name: str, labeller: Labeller) -> dict[str, float]:
    ref, last = revisit_index(name)
    read = labeller.predict(ep.frames[[ref, last]])
    return {"psnr": float(psnr(ep.frames[last], ep.frames[ref])),
            "labels": float((ep.labels[last] == ep.labels[ref]).mean()),
            "read_vs_earlier_read": float((read[1] == read[0]).mean())}


def run(model: Denoiser, cfg: Config, trips: dict[str, list[Episode]], labeller: Labeller,
        mcfg: MemoryConfig, seed: int = 0, modes: tuple[str, ...] = MODES, log=print
        ) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    if not has_view_memory(model, cfg):
        modes = tuple(m for m in modes if m not in ("view", "both"))
    report: dict[str, Any] = {}
    strips: dict[str, dict[str, np.ndarray]] = {}
    for name, eps in trips.items():
        rows: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        t0 = time.perf_counter()
        for i, ep in enumerate(eps):
            for mode in modes:
                frames = roll(model, cfg, ep, mode, seed + i, mcfg)
                rows[mode].append(score(ep, frames, name, labeller))
                if i == 0:
                    strips.setdefault(name, {"real": ep.frames})[mode] = frames
        ceiling = [real_ceiling(ep, name, labeller) for ep in eps]
        entry = {"trips": len(eps), "seeds": [int(ep.meta.get("seed", -1)) for ep in eps],
                 "steps": len(PROTOCOLS[name][0]),
                 "real_ceiling": {k: round(float(np.mean([c[k] for c in ceiling])), 4)
                                  for k in ceiling[0]}}
        for mode in modes:
            entry[mode] = {k: round(float(np.mean([r[k] for r in rows[mode]])), 4)
                           for k in rows[mode][0]}
        for mode in modes:
            if mode != "off":
                entry[f"{mode}_gain"] = {
                    "psnr_db": round(entry[mode]["psnr_vs_real"] - entry["off"]["psnr_vs_real"], 3),
                    "labels": round(entry[mode]["labels_vs_real"] - entry["off"]["labels_vs_real"], 4)}
        report[name] = entry
        log(f"{name:15s} " + "  ".join(
            f"{m}: {entry[m]['psnr_vs_real']:.2f} dB {entry[m]['labels_vs_earlier']:.3f}"
            for m in modes) + f"  (real {entry['real_ceiling']['labels']:.3f}; "
            f"{time.perf_counter() - t0:.0f} s)")
    return report, strips


def plot_strip(strips: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """Per protocol a row: the earlier frame and the revisit frame, real then each mode."""
    import cv2

    rows = []
    for name, got in strips.items():
        ref, last = revisit_index(name)
        tiles = []
        for key in ["real", *[m for m in MODES if m in got]]:
            tiles += [got[key][ref], got[key][last], np.full((64, 4, 3), 255, np.uint8)]
        rows.append(np.concatenate(tiles, 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    img = np.concatenate(rows, 0).repeat(2, 0).repeat(2, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img[..., ::-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, parents=[common_flags(device=True)],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="assets/minetest")
    p.add_argument("--trips", default="data/minetest_revisit")
    p.add_argument("--labeller", default=str(ROOT / "assets/minetest/labeller.safetensors"))
    p.add_argument("--memory-config", help="YAML with a memory: section (the temporal LoRA)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, cfg = load_checkpoint(args.checkpoint, pick_device(args.device))
    mcfg = load_memory_config(args.memory_config) if args.memory_config else MemoryConfig()
    trips = load_trips(args.trips)
    labeller = Labeller.load(args.labeller)
    # Not under inference_mode: the temporal LoRA learns with gradients (rollouts turn it on).
    report, strips = run(model, cfg, trips, labeller, mcfg, args.seed, tuple(args.modes))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"command": command_line("memory.revisit_3d", argv),
              "checkpoint": str(args.checkpoint), "context_steps": CONTEXT_STEPS,
              "protocols": report}
    write_json_atomic(out / "revisits.json", report)
    plot_strip(strips, out / "revisit_strip.png")
    print(f"wrote {out / 'revisits.json'} and revisit_strip.png")
    return report


if __name__ == "__main__":
    run_cli(main)

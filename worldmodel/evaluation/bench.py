"""Measure one-frame-per-step generation speed:

    python -m worldmodel.evaluation.bench --checkpoint runs/crafter --frames 200 --batch 1 8 32

Per batch size: step time (median and mean over steps, after warmup steps), frames per second
per world and imagined frames per second over the batch (batch * steps / s, and its ratio to
batch 1), time per stage, and peak memory. Stages:

    denoiser     the sampling passes (worldmodel.diffusion.denoise_chunk)
    cache_write  the pass that writes the finished frame into the KV cache (Rollout._commit)
    decoder      the model works in pixel space, so this is only float -> uint8 conversion and
                 the copy to the host
    overhead     the rest of the step (action encoding, noise, Python)

Stages are timed by wrapping those two functions for the length of the benchmark (nothing in
the library changes). On CUDA the wrappers synchronize around each timed call, which serialises
what would otherwise overlap: stage times are exact, the total is slightly pessimistic.
The context is random frames: the cost of a step does not depend on what is on screen.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

import worldmodel.rollout as rollout_module
from worldmodel.checkpoint import load_checkpoint
from worldmodel.config import to_dict
from worldmodel.data.dataset import to_float, to_uint8
from worldmodel.data.episode import write_json_atomic
from worldmodel.rollout import Rollout
from worldmodel.device import pick_device
from worldmodel.evaluation.reports import command_line
from worldmodel.cli import common_flags, run_cli

STAGES = ("denoiser", "cache_write", "decoder", "overhead")


class StageTimer:
    """Accumulates seconds per stage; `wrap(name, fn)` times every call of fn."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.seconds[name] += time.perf_counter() - t0
            return out
        return timed


@contextlib.contextmanager
def stage_hooks(ro: Rollout, timer: StageTimer) -> Iterator[None]:
    """Time the sampler and the cache write of `ro` while inside; restores both on exit.
    Rollout.chunk looks `denoise_chunk` up in its module at call time and `_commit` on the
    instance, so patching those two names is enough."""
    original = rollout_module.denoise_chunk
    rollout_module.denoise_chunk = timer.wrap("denoiser", original)
    ro._commit = timer.wrap("cache_write", ro._commit)  # type: ignore[method-assign]
    try:
        yield
    finally:
        rollout_module.denoise_chunk = original
        del ro._commit


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def bench_steps(ro: Rollout, actions: torch.Tensor, warmup: int, frames: int,
                timer: StageTimer) -> tuple[list[float], dict[str, float]]:
    """Seconds of each timed one-frame step, and seconds per stage summed over them."""
    step_s: list[float] = []
    stage_s = dict.fromkeys(STAGES, 0.0)
    with stage_hooks(ro, timer):
        for i in range(warmup + frames):
            timer.reset()
            timer.sync()
            t0 = time.perf_counter()
            out = ro.step(actions[i])
            timer.sync()
            t1 = time.perf_counter()
            to_uint8(out).cpu()
            timer.sync()
            t2 = time.perf_counter()
            if i < warmup:
                continue
            step_s.append(t2 - t0)
            timer.seconds["decoder"] = t2 - t1
            timer.seconds["overhead"] = (t2 - t0) - sum(timer.seconds[k] for k in STAGES[:3])
            for k in STAGES:
                stage_s[k] += timer.seconds[k]
    return step_s, stage_s


def bench_stream(ro: Rollout, actions: torch.Tensor, warmup: int, frames: int,
                 timer: StageTimer) -> tuple[list[float], dict[str, float]]:
    """The progressive sampler (`Rollout.stream`): one call for the timed frames after one for
    the warm-up ones; each frame's seconds are the call's mean (its window fill included)."""
    ro._commit = timer.wrap("cache_write", ro._commit)  # type: ignore[method-assign]
    timer.reset()
    try:
        ro.stream(actions[:warmup].T)
        timer.reset()
        timer.sync()
        t0 = time.perf_counter()
        out = ro.stream(actions[warmup:warmup + frames].T)
        timer.sync()
        t1 = time.perf_counter()
        to_uint8(out).cpu()
        timer.sync()
        t2 = time.perf_counter()
    finally:
        del ro._commit
    timer.seconds["decoder"] = t2 - t1
    timer.seconds["denoiser"] = (t1 - t0) - timer.seconds["cache_write"]
    return [(t2 - t0) / frames] * frames, dict(timer.seconds)


def bench_batch(model: torch.nn.Module, cfg, batch: int, frames: int, warmup: int,
                device: torch.device, seed: int = 0, bf16: bool | None = None) -> dict[str, Any]:
    """Time `frames` one-frame steps of `batch` worlds after `warmup` untimed ones."""
    rng = np.random.default_rng(seed)
    ro = Rollout(model, cfg, seed=seed, bf16=bf16)
    size = cfg.model.frame_size
    context = rng.integers(0, 256, (batch, ro.context, size, size, 3), dtype=np.uint8)
    n_actions = getattr(ro.space, "n", None)
    if n_actions is None:
        raise ValueError(f"bench drives discrete action spaces, not {ro.space.name}")
    ro.reset(to_float(torch.from_numpy(context)),
             torch.from_numpy(rng.integers(0, n_actions, (batch, ro.context))))
    actions = torch.from_numpy(rng.integers(0, n_actions, (warmup + frames, batch)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer = StageTimer(device)
    if cfg.diffusion.sampler == "progressive":
        step_s, stage_s = bench_stream(ro, actions, warmup, frames, timer)
    else:
        step_s, stage_s = bench_steps(ro, actions, warmup, frames, timer)
    total = sum(step_s)
    median = statistics.median(step_s)
    res: dict[str, Any] = {
        "batch": batch,
        "steps": frames,
        "step_ms_median": median * 1e3,
        "step_ms_mean": total / frames * 1e3,
        "step_ms_p90": float(np.percentile(step_s, 90)) * 1e3,
        "fps_per_world_median": 1 / median,
        "fps_per_world_mean": frames / total,
        "imagined_fps_median": batch / median,
        "imagined_fps_mean": batch * frames / total,
        "stage_ms": {k: v / frames * 1e3 for k, v in stage_s.items()},
        "stage_fraction": {k: v / total for k, v in stage_s.items()},
        "peak_rss_mb": peak_rss_mb(),
    }
    if device.type == "cuda":
        res["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return res


def bench(checkpoint: str | Path, frames: int = 200, batches: list[int] | None = None,
          warmup: int = 10, device: str | None = None, threads: int = 0,
          bf16: bool | None = None, sampler: dict[str, Any] | None = None) -> dict[str, Any]:
    """`sampler`: diffusion keys to time instead of the checkpoint's (sampler, sample_steps,
    progressive_window)."""
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    model, cfg = load_checkpoint(checkpoint, dev)
    for key, value in (sampler or {}).items():
        setattr(cfg.diffusion, key, value)
    batches = batches or [1, 8, 32]
    results = [bench_batch(model, cfg, b, frames, warmup, dev, bf16=bf16) for b in batches]
    ref = next((r for r in results if r["batch"] == 1), results[0])
    for r in results:
        r["imagined_fps_vs_batch1"] = r["imagined_fps_median"] / ref["imagined_fps_median"]
    dc = cfg.diffusion
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "device": str(dev),
        "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                        else platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": "bf16" if (dev.type == "cuda" if bf16 is None else bf16) else "fp32",
        "params": sum(p.numel() for p in model.parameters()),
        "context_frames": Rollout(model, cfg).context,
        "denoiser_passes_per_frame": (1 if dc.sampler == "progressive" else dc.sample_steps)
        * (2 if dc.guidance != 1.0 else 1),
        "sampler": dc.sampler,
        "frames": frames,
        "warmup": warmup,
        "ratio_reference_batch": ref["batch"],
        "config": {"model": to_dict(cfg.model), "diffusion": to_dict(dc)},
        "results": results,
        "notes": {"decoder": "pixel-space model: float -> uint8 conversion and copy to host",
                  "peak_rss_mb": "process peak so far (ru_maxrss), cumulative over batch sizes"},
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{report['device']} ({report['device_name']}), {report.get('precision', '')}, "
             f"{report['threads']} threads, "
             f"{report['params'] / 1e6:.2f}M params, {report['denoiser_passes_per_frame']} "
             f"denoiser passes/frame, {report['frames']} steps after {report['warmup']} warmup",
             f"{'batch':>5} {'ms/step':>8} {'fps/world':>9} {'imagined fps':>12} "
             f"{'x b' + str(report['ratio_reference_batch']):>6}  {'denoise':>7} {'cache':>6} "
             f"{'decode':>6} {'other':>6} (ms)  {'peak MB':>7}"]
    for r in report["results"]:
        st = r["stage_ms"]
        mem = r.get("cuda_max_allocated_mb", r["peak_rss_mb"])
        lines.append(f"{r['batch']:>5} {r['step_ms_median']:>8.2f} {r['fps_per_world_median']:>9.1f} "
                     f"{r['imagined_fps_median']:>12.1f} {r['imagined_fps_vs_batch1']:>6.2f}  "
                     f"{st['denoiser']:>7.2f} {st['cache_write']:>6.2f} {st['decoder']:>6.2f} "
                     f"{st['overhead']:>6.2f}       {mem:>7.0f}")
    lines.append("(medians over steps; stage ms are means; peak MB: "
                 + ("CUDA max allocated)" if report["device"].startswith("cuda") else "process RSS)"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    shared = common_flags(checkpoint={"help": "checkpoint folder (default: the shipped model of "
                                              "--game, else the shipped default)"},
                          device=True,
                          threads=True,
                          out={"help": "write the JSON report here"})
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=200, help="timed steps per batch size")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="batch sizes (worlds)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU too (CUDA: always)")
    p.add_argument("--sampler", choices=("steps", "progressive"), default=None,
                   help="time this sampler (default: the checkpoint's)")
    p.add_argument("--sample-steps", type=int, default=0, help="passes per frame (steps sampler)")
    p.add_argument("--window", type=int, default=0, help="frames in flight (progressive sampler)")
    p.add_argument("--game", default=None, help="time this game's shipped model (Game."
                   "default_checkpoint) when --checkpoint is not given")
    args = p.parse_args(argv)
    if args.checkpoint is None:  # the shipped model of the game (default: the default game's)
        from worldmodel.config import ModelConfig
        from worldmodel.game import get_game

        shipped = get_game(args.game or ModelConfig().game_name).default_checkpoint
        args.checkpoint = str(Path(__file__).resolve().parents[2] / shipped)
    if args.frames < 1 or min(args.batch) < 1:
        p.error("--frames and --batch must be positive")
    if min(args.sample_steps, args.window) < 0:
        p.error("--sample-steps and --window must be positive")
    sampler = {k: v for k, v in (("sampler", args.sampler), ("sample_steps", args.sample_steps),
                                 ("progressive_window", args.window)) if v}
    report = bench(args.checkpoint, args.frames, args.batch, args.warmup, args.device, args.threads,
                   bf16=True if args.bf16 else None, sampler=sampler)

    report["command"] = command_line("worldmodel.evaluation.bench", argv)
    print(format_table(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out), report)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    run_cli(main)

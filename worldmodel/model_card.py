"""Write a checkpoint's model card from its measured figures:

    python -m worldmodel.model_card --checkpoint assets/crafter --eval EVAL/report.json \
        --bench BENCH.json [--notes NOTES.md]

Every number in the card comes from the JSON reports of `worldmodel.evaluate` and
`worldmodel.bench` (and the checkpoint's own config/metrics); nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from worldmodel.checkpoint import METRICS, load_config_from_checkpoint, read_metrics
from worldmodel.data.episode import write_json_atomic

TARGETS = {"h1_all_psnr": 30.0, "moving_gain_db": 3.0, "fps": 20.0}


def _num(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def eval_table(report: dict) -> list[str]:
    lines = ["| horizon | steps | n | PSNR model | PSNR repeat-last | gap (dB) | SSIM model | SSIM repeat-last |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for group in ("all", "moving"):
        for h in report["horizons"]:
            r = report["results"][group].get(str(h))
            if not r or not r["n"]:
                continue
            m, b = r["model"], r["baseline"]
            gap = m["psnr"] - b["psnr"]
            lines.append(f"| {h} | {group} | {r['n']} | {_num(m['psnr'])} | {_num(b['psnr'])} | "
                         f"{gap:+.2f} | {_num(m['ssim'], '.3f')} | {_num(b['ssim'], '.3f')} |")
    return lines


def target_lines(report: dict, bench: dict | None) -> list[str]:
    res = report["results"]
    out = []
    h1 = res["all"].get("1")
    if h1:
        v, need = h1["model"]["psnr"], TARGETS["h1_all_psnr"]
        verdict = "met" if v >= need else f"missed by {need - v:.2f} dB"
        out.append(f"- PSNR at horizon 1, all steps >= {need:.0f} dB: {v:.2f} dB ({verdict})")
    for h in report["horizons"]:
        r = res["moving"].get(str(h))
        if not r or not r["n"]:
            continue
        gap = r["model"]["psnr"] - r["baseline"]["psnr"]
        need = TARGETS["moving_gain_db"] if h in (4, 16) else 0.0
        verdict = "met" if gap >= need else f"missed by {need - gap:.2f} dB"
        out.append(f"- Beat repeat-last on moving steps at horizon {h}"
                   f"{f' by >= {need:.0f} dB' if need else ''}: {gap:+.2f} dB ({verdict})")
    if bench:
        fps = bench["results"][0]["fps_per_world_median"]
        out.append(f"- One frame per step >= {TARGETS['fps']:.0f} fps: {fps:.1f} fps "
                   f"({'met' if fps >= TARGETS['fps'] else 'missed'})")
    long = report.get("long")
    if long:
        out.append(f"- {long['frames']}-frame rollout ({long['worlds']} worlds): verdict "
                   f"\"{long['verdict']}\" (long_strip.png, drift.png beside the evaluation report)")
    return out


def bench_table(bench: dict) -> list[str]:
    lines = ["| batch | fps per world (median) | imagined fps | x batch 1 | denoiser ms | cache write ms | decode ms | overhead ms | peak RSS MB |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in bench["results"]:
        st = r["stage_ms"]
        lines.append(f"| {r['batch']} | {r['fps_per_world_median']:.1f} | {r['imagined_fps_median']:.1f} | "
                     f"{r['imagined_fps_vs_batch1']:.2f} | {st['denoiser']:.1f} | {st['cache_write']:.1f} | "
                     f"{st['decoder']:.2f} | {st['overhead']:.2f} | {r['peak_rss_mb']:.0f} |")
    return lines


def join_training_logs(paths: list[Path]) -> tuple[list[dict], list[int]]:
    """Rows of consecutive runs' train_log.jsonl, each run's steps counted on from where the one
    before it ended (a run started with `--init` counts from 0 again). Also returns the step at
    which each run after the first began."""
    rows: list[dict] = []
    starts: list[int] = []
    offset = 0
    for path in paths:
        run = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if rows:
            starts.append(rows[-1]["step"])
            if run and run[0]["step"] <= rows[-1]["step"] - offset:
                offset = rows[-1]["step"]  # this run restarted its counter
        rows += [dict(r, step=r["step"] + offset) for r in run]
    return rows, starts


def plot_training_curve(log_paths: list[Path], out: Path) -> None:
    """Loss and the copy-last-frame MSE of the same batches, per logged step, over one or more
    consecutive runs (a dashed line where each later run began)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, starts = join_training_logs(log_paths)
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.plot(steps, [r["loss"] for r in rows], label="diffusion loss (x0 MSE, targets)")
    ax.plot(steps, [r["copy_mse"] for r in rows], label="repeat-last-frame MSE, same batches", alpha=0.7)
    for i, step in enumerate(starts):
        ax.axvline(step, color="gray", ls="--", lw=0.8, label="next run starts" if i == 0 else None)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def trained_steps(metrics: dict) -> str:
    """"1500" or, for a run started from another checkpoint, "3500 (2000 up to X, then 1500)"."""
    step = metrics.get("train_step")
    if step is None:
        return "n/a"
    before = int(metrics.get("init_steps", 0))
    if not before:
        return str(step)
    return f"{before + step} ({before} up to {metrics.get('init_from')}, then {step})"


def write_card(checkpoint: Path, report: dict, bench: dict | None, notes: str = "") -> str:
    cfg = load_config_from_checkpoint(checkpoint)
    metrics = read_metrics(checkpoint) or {}
    m = cfg.model
    lines = [f"# Model card: {checkpoint.name}", "",
             f"Action-conditioned pixel-space video diffusion world model of Crafter at "
             f"{m.frame_size}x{m.frame_size}, trained from scratch by this project on real-game "
             f"episodes (`python -m simulator.collect`).", "",
             "## Model", "",
             f"- Denoiser: per-frame 2D UNet, channels {m.channels}, pixel-unshuffle {m.stem_patch}, "
             f"causal temporal attention at levels {m.temporal_levels} + middle, "
             + (f"a {m.shift_kernel}x{m.shift_kernel} learned shift of the anchor, "
                if m.shift_kernel else "") +
             f"{bench['params'] / 1e6:.2f}M parameters" if bench else
             f"- Denoiser: per-frame 2D UNet, channels {m.channels}",
             f"- Rectified flow, x0-prediction as residual on the last clean frame, "
             f"{cfg.diffusion.sample_steps} sampler steps, context noise {cfg.diffusion.context_noise}, "
             f"context window {cfg.data.window - 1} frames (KV cache)",
             f"- Trained {trained_steps(metrics)} steps of batch {cfg.train.batch_size} "
             f"windows of {cfg.data.window} frames (lr {cfg.train.lr}, EMA {cfg.train.ema_decay}, "
             f"self-forcing {cfg.diffusion.self_forcing_prob}); weights are the EMA.", "",
             "## Open-loop evaluation against the real game", "",
             f"Held-out seeds (`{report.get('prefix', '')}*` in {report.get('data')}), "
             f"{report['results']['all'][str(report['horizons'][0])]['n']} samples, "
             f"{report['context_frames']} real context frames then the real actions, open loop; "
             f"\"moving\" = the player stands elsewhere than at the last context frame "
             f"(test: {report.get('moving_test')}). Baseline: repeat the last real frame.", "",
             *eval_table(report), "",
             "## Targets", "", *target_lines(report, bench), ""]
    if bench:
        lines += ["## Speed (one frame per step)", "",
                  f"Device: {bench['device']} ({bench.get('device_name', '')}), "
                  f"{bench['denoiser_passes_per_frame']} denoiser passes + 1 cache write per frame.", "",
                  *bench_table(bench), ""]
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(line for line in lines if line is not None)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--eval", required=True, help="report.json from worldmodel.evaluate")
    p.add_argument("--bench", help="JSON from worldmodel.bench")
    p.add_argument("--notes", help="markdown appended to the card (commands, caveats)")
    p.add_argument("--train-log", nargs="+", help="train_log.jsonl to plot as train_curve.png beside "
                   "the card; several: consecutive runs (e.g. one resumed with --init), in order")
    p.add_argument("--out", help="default: CHECKPOINT/MODEL_CARD.md")
    args = p.parse_args(argv)
    ckpt = Path(args.checkpoint)
    report = json.loads(Path(args.eval).read_text())
    bench = json.loads(Path(args.bench).read_text()) if args.bench else None
    notes = Path(args.notes).read_text() if args.notes else ""
    card = write_card(ckpt, report, bench, notes)
    out = Path(args.out) if args.out else ckpt / "MODEL_CARD.md"
    if args.train_log:
        plot_training_curve([Path(p) for p in args.train_log], out.parent / "train_curve.png")
        card += "\n## Training curve\n\n![training curve](train_curve.png)\n"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(card)
    tmp.replace(out)
    metrics = read_metrics(ckpt) or {}
    metrics["evaluation"] = report["results"]
    if bench:
        metrics["bench"] = bench["results"]
    write_json_atomic(ckpt / METRICS, metrics)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

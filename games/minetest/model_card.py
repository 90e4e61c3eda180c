"""The model card of a Minetest checkpoint, from its reports:
`python -m worldmodel.evaluation.model_card --checkpoint assets/minetest`.

Reads DIR/config.json, DIR/metrics.json (training), DIR/eval/report.json (worldmodel.evaluation.
evaluate with Minetest's per-pixel part) and the labeller's JSON beside its weights, and writes
DIR/MODEL_CARD.md. Every figure on the card is one of those files' figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from worldmodel.checkpoint import load_config_from_checkpoint
from worldmodel.evaluation.reports import command_line


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def card(ckpt: Path) -> str:
    cfg = load_config_from_checkpoint(ckpt)
    metrics = _json(ckpt / "metrics.json") or {}
    try:  # the training log's last line has the loss where metrics.json has only the step
        metrics = {**json.loads((ckpt / "train_log.jsonl").read_text().splitlines()[-1]), **metrics}
    except (OSError, ValueError, IndexError):
        pass
    report = _json(ckpt / "eval" / "report.json")
    with_memory = _json(ckpt / "eval" / "memory" / "report.json")  # python -m memory.evaluate
    bench = _json(ckpt / "eval" / "bench.json")
    lines = [f"# Model card: {ckpt.name} (Minetest, first person)", "",
             f"Written by `{command_line('worldmodel.evaluation.model_card', ['--checkpoint', str(ckpt)])}` "
             "from the checkpoint's own files.", "",
             "## The model", "",
             f"- The world model's core behind the game seam: "
             f"channels {cfg.model.channels}, frame {cfg.model.frame_size}x{cfg.model.frame_size}, "
             f"shift kernel {cfg.model.shift_kernel}, {cfg.diffusion.sample_steps} sampler steps; "
             + "a view memory of frames kept by the pose dead-reckoned from the committed actions, "
             "on by default (`m` switches it): a view seen again from the same place is "
             "reprojected from the frames remembered there and the sampler keeps those pixels "
             "(worldmodel.known)"
             + (f"; and recall of {cfg.model.recall} remembered frames per target "
                "(worldmodel.recall: found by field-of-view overlap, attended to with their "
                "relative pose)." if cfg.model.recall else "."),
             f"- Trained {metrics.get('train_step', '?')} steps on `{cfg.data.train}` "
             + (f"after the {metrics['init_steps']} steps behind `{metrics['init_from']}` "
                if metrics.get("init_steps") else "") +
             f"(batch {cfg.train.batch_size}, lr {cfg.train.lr}); last logged loss "
             f"{metrics.get('loss', '?')}.", ""]
    if bench:
        b1 = next((r for r in bench["results"] if r["batch"] == 1), None)
        if b1:
            lines += [f"Speed (`{bench['command']}`, {bench['device']}, {bench['threads']} threads): "
                      f"{b1['fps_per_world_median']:.1f} frames per second at batch 1, one frame "
                      "per step.", ""]
    fps = _json(ckpt / "eval" / "fps.json")
    if fps:
        lines += [f"Memory on vs off (`{fps['command']}`, random moves, turns and tilts, "
                  f"{fps['frames_on']} frames each way, stores {fps['stores']}): "
                  f"{fps['fps_on']:.1f} vs {fps['fps_off']:.1f} frames per second, ratio "
                  f"{fps['ratio']:.2f}.", ""]
    lines += revisit_lines(_json(ckpt / "eval" / "revisits" / "revisits.json"))
    lines += revisit_lines(_json(ckpt / "eval" / "revisits_fast_lora" / "revisits.json"),
                           "### The same with a faster temporal LoRA (its --memory-config)")
    if report is None:
        return "\n".join(lines + ["Not evaluated yet: run `python -m worldmodel.evaluation.evaluate "
                                  f"--checkpoint {ckpt} --data data/minetest --prefix heldout_ "
                                  f"--out {ckpt}/eval`.", ""])
    lines += ["## Against the real game", "",
              f"`{report.get('command', '?')}`: {report['samples']} held-out samples, memory off.", "",
              "PSNR (dB), model vs repeat-last, on every step and on steps that move the view "
              "(memory off; the last columns memory on, `eval/memory`):", ""]
    on = " | all: model, memory on | moving: model, memory on" if with_memory else ""
    lines += ["| horizon | all: model | all: repeat-last | moving: model | moving: repeat-last"
              + on + " |", "| --- | --- | --- | --- | --- |" + (" --- | --- |" if on else "")]
    for h in report.get("horizons", []):
        cells = []
        for group in ("all", "moving"):
            r = report["results"].get(group, {}).get(str(h), {})
            cells += [f"{r[k]['psnr']:.2f}" if k in r else "-" for k in ("model", "baseline")]
        for group in ("all", "moving") if with_memory else ():
            r = with_memory["results"].get(group, {}).get(str(h), {}).get("model")
            cells.append(f"{r['psnr']:.2f}" if r else "-")
        lines.append(f"| {h} | " + " | ".join(cells) + " |")
    sem = report.get("semantic") or {}
    if "labels" in sem:  # the report's keys come back sorted as text: order the horizons
        sem["labels"] = {k: dict(sorted(v.items(), key=lambda kv: int(kv[0])))
                         for k, v in sem["labels"].items()}
        sem["sky_boundary_within_1"] = dict(sorted(sem["sky_boundary_within_1"].items(),
                                                   key=lambda kv: int(kv[0])))
        lines += ["", f"Per-pixel labels of imagined frames against the game's ({sem['worlds']} worlds; "
                  "accuracy / mean IoU; the labeller on the real frames is the ceiling):", "",
                  "| | " + " | ".join(f"h={h}" for h in sem["labels"]["model"]) + " |",
                  "| --- |" + " --- |" * len(sem["labels"]["model"])]
        rows = dict(sem["labels"])
        rows["model (memory off)"] = rows.pop("model")
        mem_sem = (with_memory or {}).get("semantic") or {}
        if "labels" in mem_sem:
            rows["model (memory on)"] = mem_sem["labels"]["model"]
        for name, by_h in rows.items():
            lines.append(f"| {name} | " + " | ".join(
                f"{by_h[h]['accuracy']:.3f} / {by_h[h]['mean_iou']:.3f}" if h in by_h else "-"
                for h in sem["labels"]["model"]) + " |")
        if with_memory:
            lines += ["", f"Memory on: `{with_memory.get('command', '?')}` (the same held-out "
                      "starts and actions; every other figure in this section is memory off)."]
        sc, bm = sem["scene_cuts"], sem["blocked_moves"]
        lines += ["", "Memory off below:", "", f"- Sky boundary within one label pixel: "
                  + ", ".join(f"h={h} {v:.3f}" for h, v in sem["sky_boundary_within_1"].items()),
                  f"- Scene cuts (a change larger than any real step, {sc['threshold_mad']}): model "
                  f"{sc['model_share']}, real {sc['real_share']}.",
                  f"- Blocked moves the model kept still: {bm['model_still_share']} of {bm['n']}."]
        lab = _json(Path(sem["labeller"]).with_suffix(".json"))
        if lab:
            lines.append(f"- The labeller (`{lab.get('command')}`): held-out real-frame pixel "
                         f"accuracy {lab['heldout']['pixel_accuracy']}.")
    if "long" in report:
        lines += ["", f"Long rollout: {report['long']['frames']} frames x {report['long']['worlds']} "
                  f"worlds: {report['long']['verdict']}."]
    return "\n".join(lines) + "\n"


def revisit_lines(rev: dict | None, title: str = "## Revisits (the view comes back)") -> list[str]:
    """The revisit protocols' table (memory.revisit_3d), memory modes side by side."""
    if not rev:
        return []
    protocols = rev["protocols"]
    modes = [m for m in ("off", "view", "lora", "both") if m in next(iter(protocols.values()))]
    first = next(iter(protocols.values()))
    read = " / read" if "read_vs_earlier_read" in first[modes[0]] else ""
    out = [title, "",
           f"`{rev['command']}`: the real context, then a fixed trip in the real game and in the "
           "model under the same actions; its last frame faces a view seen long before. PSNR (dB) "
           "of that frame against the real game's, and its labels' agreement with the real "
           "labels of the earlier view (and, read, the labeller's reading of it against its "
           "reading of the real earlier frame, where its own errors cancel); modes: off (no "
           "memory), view (the view memory: known "
           "pixels, and recall for a recall model), lora (the temporal LoRA alone), both. "
           "Memory on for every mode but off.", "",
           "| protocol | trips | " + " | ".join(f"{m}: dB / labels{read}" for m in modes)
           + f" | real game's own revisit: dB / labels{read} |",
           "| --- | --- |" + " --- |" * (len(modes) + 1)]

    def cell(r: dict, db: str, labels: str) -> str:
        text = f"{r[db]:.2f} / {r[labels]:.3f}"
        return text + (f" / {r['read_vs_earlier_read']:.3f}" if read else "")

    for name, e in protocols.items():
        out.append(f"| {name} | {e['trips']} | " + " | ".join(
            cell(e[m], "psnr_vs_real", "labels_vs_earlier") for m in modes)
            + f" | {cell(e['real_ceiling'], 'psnr', 'labels')} |")
    return out + [""]


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    args = p.parse_args(argv)
    ckpt = Path(args.checkpoint)
    text = card(ckpt)
    (ckpt / "MODEL_CARD.md").write_text(text)
    print(text)
    return text

"""Write a checkpoint's model card, and the README's results block, from its JSON reports:

    python -m worldmodel.evaluation.model_card --checkpoint assets/crafter [--readme README.md]

Every figure in the card comes from a report in CHECKPOINT/eval/ (or the tile bank's report),
and every report names the command that wrote it (its "command" key); the card prints that
command and the report's path beside each section. A report without a command, or a figure
whose key is missing from its report, stops the generator with an error naming it: a figure
with no report behind it is never published. Nothing is typed in by hand.

Reports (paths relative to the checkpoint's eval/ folder; all but report.json optional):
report.json (worldmodel.evaluation.evaluate), bench.json (worldmodel.evaluation.bench), revisit.json and
revisit_trip/revisit.json, revisit_loop/revisit.json (memory.revisit), memory_fps/fps.json (memory.fps), plan.json
(run_sim.py plan), levers/NAME/report.json (worldmodel.evaluation.evaluate of each lever tried, issue 12),
and the tile bank's report.

The card's parts: games.crafter.card_reports (the reports and the targets) and
games.crafter.card_sections (the card's sections); here the README's results block, the
training curve and the command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from games.crafter.card_reports import OPTIONAL, ModelCardError, Reports, num, ordered
from games.crafter.card_sections import trained_steps, write_card
from games.crafter.tiles import DEFAULT_BANK
from worldmodel.checkpoint import METRICS, read_metrics
from worldmodel.cli import common_flags
from worldmodel.data.episode import write_json_atomic

README_BEGIN = "<!-- results:begin (python -m worldmodel.evaluation.model_card --readme README.md) -->"
README_END = "<!-- results:end -->"

__all__ = ["ModelCardError", "README_BEGIN", "README_END", "Reports", "collect_reports",
           "join_training_logs", "main", "readme_block", "trained_steps", "write_card"]


# ---- the README's results block -----------------------------------------------------------------

def readme_block(checkpoint: Path, r: Reports) -> str:
    """A short summary for the README, every figure from the same reports (first what a player
    sees, then PSNR)."""
    sem = r.get("evaluation", "semantic")
    res = r.get("evaluation", "results")
    lines = [README_BEGIN, "",
             f"Shipped model `{checkpoint}`; full figures, plots and commands in "
             f"[`{checkpoint}/MODEL_CARD.md`]({checkpoint}/MODEL_CARD.md). Measured on this project's "
             "2-core CPU.", ""]
    state = "on" if (r.data.get("evaluation") or {}).get("view_memory") else "off"  # as it ran
    if "permanence" in sem:
        pm = {h: sem["permanence"]["model"][h] for h in ordered(sem["permanence"]["model"])}
        base = sem["permanence"]["repeat_last"]
        b = sem["buckets"]
        last = ordered(b["model"])[-1]
        lines += [f"What a player sees ({r.paths['evaluation']}, memory {state}: {sem['worlds']} held-out worlds, "
                  f"{sem['horizon']} frames after a wander, tile labels vs the real game):", "",
                  "- Carried non-grass cells drawn right at h = " + " / ".join(pm) + ": "
                  + " / ".join(num(v["non_grass"], ".2f") for v in pm.values()) + " (repeat-last: "
                  + " / ".join(num(base[h]["non_grass"], ".2f") for h in pm)
                  + ").",
                  f"- Non-grass share of tiles, frames {last}: model {num(b['model'][last]['non_grass'], '.2f')}, "
                  f"real game {num(b['real'][last]['non_grass'], '.2f')}; smears "
                  f"{num(b['model'][last]['smear'], '.3f')} of tiles there (real frames "
                  f"{num(b['real_classified'][last]['smear'], '.3f')}), "
                  f"{max(v['smear'] for v in b['model'].values()):.3f} in the worst bucket; "
                  "revealed land's label histogram "
                  f"{num(sem['revealed']['model']['tv'], '.2f')} (total variation) from the real game's.",
                  f"- Blocked moves leave the view in place on {num(sem['scroll']['model']['blocked_moves']['agree'], '.2f')} "
                  f"of them, free moves scroll it on {num(sem['scroll']['model']['free_moves']['agree'], '.2f')}.", ""]
    if "lever:view_memory_on" in r:  # the same worlds with the view memory switched on
        mem = r.get("lever:view_memory_on", "semantic")
        pm = mem["permanence"]["model"]
        b = mem["buckets"]
        last = ordered(b["model"])[-1]
        lines += [f"With the view memory on ({r.paths['lever:view_memory_on']}, the same worlds): "
                  "carried non-grass cells right at h = " + " / ".join(ordered(pm)) + ": "
                  + " / ".join(num(pm[h]["non_grass"], ".2f") for h in ordered(pm))
                  + f"; non-grass share, frames {last}: {num(b['model'][last]['non_grass'], '.2f')} "
                  f"(real {num(b['real'][last]['non_grass'], '.2f')}); revealed land "
                  f"{num(mem['revealed']['model']['tv'], '.2f')} (total variation).", ""]
    rows = [(h, res["moving"][str(h)]) for h in r.get("evaluation", "horizons") if res["moving"].get(str(h), {}).get("n")]
    lines += [f"PSNR of the mean MSE on steps where the view moves ({r.paths['evaluation']}, memory {state}), model vs "
              "repeat-last: " + "; ".join(f"h={h} {row['model']['psnr']:.2f} vs {row['baseline']['psnr']:.2f}"
                                           for h, row in rows) + " dB.", ""]
    if "bench" in r:
        rows = r.get("bench", "results")
        lines += [f"Speed ({r.paths['bench']}, memory off): {rows[0]['fps_per_world_median']:.1f} fps one frame per step; "
                  + ", ".join(f"batch {x['batch']} {x['imagined_fps_median']:.1f} imagined fps"
                              for x in rows[1:]) + ".", ""]
    for name, title in (("revisit", "everything after the real context imagined"),
                        ("revisit_trip", "the real trip out given, the way back imagined"),
                        ("revisit_loop", "loops, everything after the real context imagined")):
        if name not in r:
            continue
        s = r.get(name, "summary", "revisit")
        modes = [m for m in s if isinstance(s[m], dict) and m != "off"]
        lines += [f"Memory on revisits, {title} ({r.paths[name]}), against memory off: " + "; ".join(
            f"{m} {num(s[m].get('gain_vs_real_psnr_db'), '+.2f')} dB vs the real game, tiles vs "
            f"real {num(s['off'].get('vs_real_tiles'), '.3f')} -> {num(s[m].get('vs_real_tiles'), '.3f')}, "
            f"vs own first visit {num(s['off'].get('vs_first_visit_tiles'), '.3f')} -> "
            f"{num(s[m].get('vs_first_visit_tiles'), '.3f')}" for m in modes) + ".", ""]
        own = r.get(name, "summary").get("own_pose") or {}
        if any((b or {}).get("n") for b in own.values()):
            lines += ["Paired by the model's own pose instead, tiles vs own first visit: " + "; ".join(
                f"{m} {num(b.get('vs_own_first_visit_tiles'), '.3f')} ({b.get('n', 0)} frames, "
                f"non-grass {num(b.get('non_grass_generated'), '.3f')} of generated tiles, real "
                f"{num(b.get('real_non_grass'), '.3f')})" for m, b in own.items()) + ".", ""]
    return "\n".join(lines + [README_END])


def update_readme(path: Path, block: str) -> None:
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ModelCardError(f"{path} has no results block ({README_BEGIN} ... {README_END})")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(head + block + tail)


# ---- training curve -----------------------------------------------------------------------------

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


# ---- entry point --------------------------------------------------------------------------------

def collect_reports(checkpoint: Path, eval_dir: Path | None, tiles_report: Path | None) -> Reports:
    eval_dir = eval_dir or checkpoint / "eval"
    paths = {"evaluation": eval_dir / "report.json"}
    if not paths["evaluation"].is_file():
        raise ModelCardError(f"no evaluation report at {paths['evaluation']} (python -m "
                             "worldmodel.evaluation.evaluate --out ...)")
    paths.update({k: eval_dir / v for k, v in OPTIONAL.items() if (eval_dir / v).is_file()})
    for lever in sorted((eval_dir / "levers").glob("*/report.json")):
        paths[f"lever:{lever.parent.name}"] = lever
        if (lever.parent / "bench.json").is_file():
            paths[f"bench:lever:{lever.parent.name}"] = lever.parent / "bench.json"
    tiles_report = tiles_report or DEFAULT_BANK.with_suffix(".json")
    if tiles_report.is_file():
        paths["tiles"] = tiles_report
    return Reports(paths, Path.cwd())


def main(argv: list[str] | None = None) -> str:
    shared = common_flags(checkpoint={"required": True},
                          out={"help": "default: CHECKPOINT/MODEL_CARD.md"})
    p = argparse.ArgumentParser(description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval-dir", help="folder of the reports (default: CHECKPOINT/eval)")
    p.add_argument("--tiles-report", help="the tile bank's report (default: beside the shipped bank)")
    p.add_argument("--train-log", nargs="+", help="train_log.jsonl to plot as train_curve.png beside "
                   "the card; several: consecutive runs (e.g. one resumed with --init), in order")
    p.add_argument("--readme", help="also rewrite this README's results block")
    args = p.parse_args(argv)
    ckpt = Path(args.checkpoint)
    r = collect_reports(ckpt, Path(args.eval_dir) if args.eval_dir else None,
                        Path(args.tiles_report) if args.tiles_report else None)
    card = write_card(ckpt, r)
    out = Path(args.out) if args.out else ckpt / "MODEL_CARD.md"
    if args.train_log:
        plot_training_curve([Path(q) for q in args.train_log], out.parent / "train_curve.png")
        card += "\n## Training curve\n\n![training curve](train_curve.png)\n"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(card)
    tmp.replace(out)
    if args.readme:
        update_readme(Path(args.readme), readme_block(ckpt, r))
    metrics = read_metrics(ckpt) or {}
    metrics["evaluation"] = r.get("evaluation", "results")
    if "semantic" in r.data["evaluation"]:
        metrics["semantic"] = {k: r.data["evaluation"]["semantic"].get(k)
                               for k in ("permanence", "buckets", "revealed", "scroll")}
    if "bench" in r:
        metrics["bench"] = r.get("bench", "results")
    write_json_atomic(ckpt / METRICS, metrics)
    print(f"wrote {out}")
    return card

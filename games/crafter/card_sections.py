"""The sections of Crafter's model card (`games.crafter.model_card`): the model, the semantic
evaluation, the tile bank, the levers tried, PSNR, speed, revisits, memory speed and planning;
each a list of Markdown lines, every figure from a report (`Reports.get`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from games.crafter.card_reports import (ALL_CELLS_TARGET_H16, BATCH_SPEEDUP_TARGET, FPS_TARGET,
                                        PERMANENCE_TARGETS, SMEAR_TARGET, Reports, num, ordered,
                                        verdict)
from games.crafter.land_model import LandPrior
from worldmodel.checkpoint import load_config_from_checkpoint, read_metrics
from worldmodel.evaluation.reports import bootstrap_interval


def semantic_section(r: Reports) -> list[str]:
    sem = r.get("evaluation", "semantic")
    if "skipped" in sem:
        return ["## What a player sees", "", f"Skipped: {sem['skipped']}", ""]
    pm = r.get("evaluation", "semantic", "permanence")
    lines = ["## What a player sees: per-tile agreement with the real game", "",
             f"{sem['worlds']} held-out worlds, each from {r.get('evaluation', 'context_frames')} "
             f"real context frames after a {sem['wander']}-step wander, then {sem['horizon']} frames "
             "one per step under the real actions at the checkpoint's default sampler; every "
             "world-view tile labelled by the tile classifier (below) and compared with the real "
             "game's own labels. Repeat-last: the last context frame, held.", "",
             r.source("evaluation"), "",
             "| horizon | carried non-grass cells right: model | repeat-last | target | "
             "all carried cells: model | repeat-last |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for h in ordered(pm["model"]):
        row, base = pm["model"][h], pm["repeat_last"][h]
        need = PERMANENCE_TARGETS.get(h)
        target = (f">= {need:.2f} ({verdict(row['non_grass'] >= need)})"
                  if need is not None and row["non_grass"] is not None else "")
        lines.append(f"| {h} | {num(row['non_grass'], '.3f')} (n={row['n_non_grass']}) | "
                     f"{num(base['non_grass'], '.3f')} | {target} | {num(row['all'], '.3f')} | "
                     f"{num(base['all'], '.3f')} |")
    h16 = pm["model"].get("16")
    if h16:
        lines += ["", f"All carried cells at h=16: {num(h16['all'], '.3f')} "
                  f"(target >= {ALL_CELLS_TARGET_H16}: {verdict(h16['all'] >= ALL_CELLS_TARGET_H16)})."]
    b = r.get("evaluation", "semantic", "buckets")
    lines += ["", "| frames after context | non-grass share: model | real game | repeat-last | "
              "smear share: model | real frames |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for k in ordered(b["model"]):
        row = b["model"][k]
        lines.append(f"| {k} | {num(row['non_grass'], '.3f')} | {num(b['real'][k]['non_grass'], '.3f')} | "
                     f"{num(b['repeat_last'][k]['non_grass'], '.3f')} | {num(row['smear'], '.3f')} | "
                     f"{num(b['real_classified'][k]['smear'], '.3f')} |")
    rv = r.get("evaluation", "semantic", "revealed")
    dl = r.get("evaluation", "semantic", "distinct_labels")
    sc = r.get("evaluation", "semantic", "scroll")
    lines += ["", f"- Newly revealed cells ({rv['model']['n']}): label histogram total-variation "
              f"distance to the real game's {num(rv['model']['tv'], '.3f')} (target <= 0.10: "
              f"{verdict(None if rv['model']['tv'] is None else rv['model']['tv'] <= 0.10)}); "
              f"repeat-last {num(rv['repeat_last']['tv'], '.3f')}.",
              f"- Distinct labels drawn over all worlds: model {dl['model']['pooled']}, real game "
              f"{dl['real']['pooled']} (target >= 10: {verdict(dl['model']['pooled'] >= 10)}); per "
              f"world {dl['model']['per_world_mean']:.1f} vs {dl['real']['per_world_mean']:.1f}.",
              "- The view scrolls as the real game's did (estimated from the frames' pixels): "
              + "; ".join(f"{k.replace('_', ' ')} {num(v['agree'], '.3f')} (n={v['n']})"
                          for k, v in sc["model"].items())
              + ". The same estimate on the real frames (the pose estimator's accuracy): "
              + "; ".join(f"{k.replace('_', ' ')} {num(v['agree'], '.3f')}"
                          for k, v in sc["real_frames"].items()) + "."]
    real_run = r.get("evaluation", "semantic", "real_long_run")
    long = r.get("evaluation", "long").get("semantic") if "long" in r.data["evaluation"] else None
    if long:
        lines += ["", f"Long rollout ({r.get('evaluation', 'long', 'frames')} frames, "
                  f"{r.get('evaluation', 'long', 'worlds')} worlds, sticky random movement-biased "
                  f"actions), against the real game's long-run non-grass share "
                  f"{num(real_run.get('non_grass'), '.3f')} over {real_run.get('frames')} held-out "
                  f"frames (real frames' smear share {num(real_run.get('smear'), '.3f')}):", "",
                  "| frames | non-grass share | smear share |", "| --- | ---: | ---: |"]
        for k in ordered(long["buckets"]):
            row = long["buckets"][k]
            lines.append(f"| {k} | {num(row['non_grass'], '.3f')} | {num(row['smear'], '.3f')} |")
        worst = max(row["smear"] for row in long["buckets"].values())
        lines += ["", f"Worst smear share in any bucket: {worst:.3f} (target <= {SMEAR_TARGET}: "
                  f"{verdict(worst <= SMEAR_TARGET)})."]
    lines += ["", "Plots: `semantic.png` (non-grass and smear share over time, model vs real), "
              "`semantic_strip.png` (real vs model after a wander), beside the report.", ""]
    return lines


def tiles_section(r: Reports) -> list[str]:
    if "tiles" not in r:
        return []
    d = r.get("tiles", "damage_rejected")
    return ["## The tile classifier", "",
            f"Nearest neighbour over a bank of {r.get('tiles', 'bank_tiles')} labelled real 7x7 tiles "
            f"from {r.get('tiles', 'train_episodes')} training episodes (day and night), with a reject "
            "class for tiles farther from every bank tile than a threshold per daylight bucket, set on "
            "held-out real tiles.", "", r.source("tiles"), "",
            f"- Held-out real frames ({r.get('tiles', 'heldout_episodes')} episodes, "
            f"{r.get('tiles', 'heldout_tiles')} tiles): {r.get('tiles', 'accuracy'):.2%} labelled "
            f"right, {r.get('tiles', 'rejected'):.2%} rejected.",
            "- Damage rejected: " + ", ".join(f"{k} {v:.0%}" for k, v in d.items())
            + " of tiles (a 3x3 blur, a 50/50 blend with the view moved one tile, pixel noise).", ""]


def psnr_section(r: Reports) -> list[str]:
    rep = r.get("evaluation")
    lines = ["## PSNR and SSIM against the real game (open loop)", "",
             f"Held-out seeds (`{rep.get('prefix', '')}*`), {r.get('evaluation', 'samples')} samples, "
             f"{r.get('evaluation', 'context_frames')} real context frames then the real actions; "
             "\"moving\": the player stands elsewhere than at the last context frame. PSNR is of the "
             "mean squared error over the samples (no per-frame cap). Baseline: repeat the last "
             "real frame.", "", r.source("evaluation"), "",
             "| horizon | steps | n | PSNR model | PSNR repeat-last | gap (dB) | SSIM model | SSIM repeat-last |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    res = r.get("evaluation", "results")
    for group in ("all", "moving"):
        for h in r.get("evaluation", "horizons"):
            row = res[group].get(str(h))
            if not row or not row["n"]:
                continue
            m, b = row["model"], row["baseline"]
            lines.append(f"| {h} | {group} | {row['n']} | {num(m['psnr'])} | {num(b['psnr'])} | "
                         f"{m['psnr'] - b['psnr']:+.2f} | {num(m['ssim'], '.3f')} | {num(b['ssim'], '.3f')} |")
    above = [res["moving"][str(h)]["model"]["psnr"] > res["moving"][str(h)]["baseline"]["psnr"]
             for h in r.get("evaluation", "horizons") if res["moving"].get(str(h), {}).get("n")]
    lines += ["", f"Above repeat-last at every horizon on moving steps: {verdict(all(above))}.", ""]
    return lines


def bench_section(r: Reports) -> list[str]:
    if "bench" not in r:
        return []
    rows = r.get("bench", "results")
    lines = ["## Speed", "",
             f"Device: {r.get('bench', 'device')} ({r.data['bench'].get('device_name', '')}), "
             f"{r.get('bench', 'denoiser_passes_per_frame')} denoiser passes + 1 cache write per frame.",
             "", r.source("bench"), "",
             "| batch | fps per world (median) | imagined fps | x batch 1 | denoiser ms | cache write ms | peak RSS MB |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        st = row["stage_ms"]
        lines.append(f"| {row['batch']} | {row['fps_per_world_median']:.1f} | {row['imagined_fps_median']:.1f} | "
                     f"{row['imagined_fps_vs_batch1']:.2f} | {st['denoiser']:.1f} | {st['cache_write']:.1f} | "
                     f"{row['peak_rss_mb']:.0f} |")
    fps = rows[0]["fps_per_world_median"]
    lines += ["", f"One frame per step: {fps:.1f} fps (target >= {FPS_TARGET:.0f}: {verdict(fps >= FPS_TARGET)})."]
    b32 = [row for row in rows if row["batch"] == 32]
    if b32:
        x = b32[0]["imagined_fps_vs_batch1"]
        lines.append(f"Batch 32: {x:.2f}x batch 1's imagined fps (target >= {BATCH_SPEEDUP_TARGET:.0f}x: "
                     f"{verdict(x >= BATCH_SPEEDUP_TARGET)}).")
    return lines + [""]


def revisit_section(r: Reports) -> list[str]:
    lines = []
    for name, title, kind in (
            ("revisit", "real context, everything after imagined", "out-and-back"),
            ("revisit_trip", "real trip out given, the way back imagined", "out-and-back"),
            ("revisit_loop", "loops, real context, everything after imagined",
             "loop (back at the start by another path)")):
        if name not in r:
            continue
        s = r.get(name, "summary", "revisit")
        modes = [m for m in s if isinstance(s[m], dict)]
        lines += [f"### Revisits: {title}", "", f"{r.get(name, 'episodes')} held-out {kind} "
                  f"trips, {s['n']} revisit frames (the player back where an earlier stay left the "
                  "context window).", "", r.source(name), "",
                  "| memory | PSNR vs real (frame mean) | PSNR vs real (mean MSE) | tiles vs real | "
                  "tiles vs own first visit | gain (dB) | 90% interval over trips |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for m in modes:
            row = s[m]
            iv = row.get("gain_interval90_db")
            lines.append(f"| {m} | {num(row['vs_real_psnr'])} | {num(row.get('vs_real_psnr_mean_mse'))} | "
                         f"{num(row.get('vs_real_tiles'), '.3f')} | {num(row.get('vs_first_visit_tiles'), '.3f')} | "
                         f"{num(row.get('gain_vs_real_psnr_db'), '+.2f')} | "
                         f"{'' if not iv else f'{iv[0]:+.2f} to {iv[1]:+.2f}'} |")
        lines.append("")
        summary = r.get(name, "summary")
        pose = summary.get("pose_accuracy") or {}
        if pose:
            real = summary.get("pose_accuracy_real") or {}
            gen = summary.get("pose_accuracy_generated") or {}
            lines += ["The view memory's pose, read from the frames (real ones by their scroll, "
                      "generated ones by the committed move), equals the game's position on "
                      + ", ".join(f"{v:.1%} of frames ({m}"
                                  + (f"; real frames {real[m]:.1%}, generated {gen[m]:.1%}"
                                     if real.get(m) is not None and gen.get(m) is not None else "")
                                  + ")" for m, v in pose.items())
                      + ". Where the imagined player leaves the real one (the model drew open "
                      "land where the game has a tree, and walked on), the game's positions pair "
                      "two different places of the imagined world; the table below pairs "
                      "revisits by the model's own pose instead.", ""]
        own = summary.get("own_pose") or {}
        if any((b or {}).get("n") for b in own.values()):
            lines += ["Revisits by the model's own pose (read from its generated frames by the "
                      "same scroll tracking, the same way for every mode): the frames where its "
                      "imagined player stands where an earlier stay of its own left the context "
                      "window, against its own frame from then; with the richness of those "
                      "frames, since an empty world agrees with itself trivially.", "",
                      "| memory | revisit frames | tiles vs own first visit | PSNR vs own first "
                      "visit | non-grass (revisit frames) | non-grass (all generated) | real game |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for m, b in own.items():
                lines.append(f"| {m} | {b.get('n', 0)} | {num(b.get('vs_own_first_visit_tiles'), '.3f')} | "
                             f"{num(b.get('vs_own_first_visit_psnr'))} | {num(b.get('non_grass'), '.3f')} | "
                             f"{num(b.get('non_grass_generated'), '.3f')} | "
                             f"{num(b.get('real_non_grass'), '.3f')} |")
            lines.append("")
    return (["## Episodic memory", "",
             "Modes: off (the base model), view (the view memory alone), lora (the temporal LoRA "
             "alone), both, on (the session's default stores).", ""] + lines) if lines else []


def memory_fps_section(r: Reports) -> list[str]:
    if "memory_fps" not in r:
        return []
    return ["### Live fps with memory on", "", r.source("memory_fps"), "",
            f"- Memory on / off: {r.get('memory_fps', 'ratio'):.2f} ({r.get('memory_fps', 'fps_on'):.1f} vs "
            f"{r.get('memory_fps', 'fps_off'):.1f} fps); the worker made "
            f"{r.get('memory_fps', 'worker_updates_per_s'):.1f} updates/s; the most a frame spent in "
            f"memory hooks: {r.get('memory_fps', 'hook_ms_max'):.1f} ms.", ""]


def plan_section(r: Reports) -> list[str]:
    if "plan" not in r:
        return []
    lines = ["## Planning in imagination", "", r.source("plan"), "",
             "| task | agent | episodes | success rate | 90% interval |", "| --- | --- | ---: | ---: | --- |"]
    for task, agents in r.get("plan", "results").items():
        for agent, row in agents.items():
            iv = bootstrap_interval([float(e["success"]) for e in row["episodes"]])
            lines.append(f"| {task} | {agent} | {row['n']} | {row['success_rate']:.0%} | "
                         f"{'' if not iv else f'{iv[0]:.0%} to {iv[1]:.0%}'} |")
    return lines + [""]


def trained_steps(metrics: dict) -> str:
    """"1500" or, for a run started from another checkpoint, "3500 (2000 up to X, then 1500)"."""
    step = metrics.get("train_step")
    if step is None:
        return "n/a"
    before = int(metrics.get("init_steps", 0))
    if not before:
        return str(step)
    return f"{before + step} ({before} up to {metrics.get('init_from')}, then {step})"



def model_section(checkpoint: Path, r: Reports) -> list[str]:
    cfg = load_config_from_checkpoint(checkpoint)
    metrics = read_metrics(checkpoint) or {}
    m = cfg.model
    params = f", {r.get('bench', 'params') / 1e6:.2f}M parameters" if "bench" in r else ""
    return [f"# Model card: {checkpoint.name}", "",
            f"Action-conditioned pixel-space video diffusion world model of Crafter at "
            f"{m.frame_size}x{m.frame_size}, trained from scratch by this project on real-game "
            f"episodes (`python -m simulator.collect`). This card is generated by "
            f"`python -m worldmodel.evaluation.model_card --checkpoint {checkpoint}` from the reports it names.", "",
            "## Model", "",
            f"- Denoiser: per-frame 2D UNet, channels {m.channels}, pixel-unshuffle {m.stem_patch}, "
            f"causal temporal attention at levels {m.temporal_levels} + middle"
            + (f", a committed one-tile move per frame (a move head reading the {m.committed_move}-px "
               f"tiles around the player)" if m.committed_move else
               f", a {m.shift_kernel}x{m.shift_kernel} learned shift of the anchor" if m.shift_kernel
               else "")
            + (", a view memory (revealed cells from what was seen there before)"
               if m.view_memory else "")
            + params,
            *([f"- Tile codebook (`{cfg.game.get('tile_codebook', '')}`, games.crafter.codebook): every "
               "generated world-view tile is replaced by its nearest real tile from training "
               "episodes (of the frame's light level), so a cell is one decision among "
               "tiles the game drew. The tile classifier then rejects none of them: the smear "
               "share is 0 by construction, and what it measures is whether each cell is the "
               "right tile."] if cfg.game.get('tile_codebook', '') else []),
            *(_land_lines(checkpoint, cfg) if cfg.game.get('land_prior', '') else []),
            f"- Rectified flow, x0-prediction as residual on the last clean frame, "
            f"{cfg.diffusion.sample_steps} sampler steps, context window {cfg.data.window - 1} frames (KV cache)",
            f"- Trained {trained_steps(metrics)} steps of batch {cfg.train.batch_size} windows of "
            f"{cfg.data.window} frames (lr {cfg.train.lr}, EMA {cfg.train.ema_decay}, self-forcing "
            f"{cfg.diffusion.self_forcing_prob}); the weights are the EMA.", ""]


def _land_lines(checkpoint: Path, cfg) -> list[str]:
    """The land prior's line of the model section, with its held-out fit from its own file."""
    prior = LandPrior.load(checkpoint / cfg.game.get('land_prior', ''))
    info = getattr(prior, "info", {})
    held = info.get("heldout") or {}
    fit = (f" On {held['steps']} held-out steps of training seeds' episodes ({info.get('command')}), "
           f"its sampled lines are {held['non_grass_sampled']:.1%} not grass (the real lines "
           f"{held['non_grass_real']:.1%}), label histogram {held['tv']:.3f} (total variation) "
           "from the real one." if held else "")
    return [f"- Land prior (`{cfg.game.get('land_prior', '')}`, games.crafter.land, "
            f"{sum(p.numel() for p in prior.parameters()) / 1e3:.0f}k parameters): the cells a move "
            "reveals that the view memory does not know are sampled among the game's labels, "
            "given the view they border (two passes: the line's even cells, then its odd ones), "
            "and drawn into the memory canvas as that label's real tile at the frame's light: "
            "the denoiser draws them as it draws what the memory knows. Without it, revealed "
            "land is what a squared-error denoiser averages to: grass." + fit]


def _lever_bench(name: str) -> str:
    """The name of a lever's bench report: the shipped default's own, or the one beside it."""
    return "bench" if name == "evaluation" else f"bench:{name}"


def _lever_fps(r: Reports, name: str) -> str:
    bench = _lever_bench(name)
    return (f"{r.get(bench, 'results', 0, 'fps_per_world_median'):.1f}" if bench in r else "n/a")


def levers_section(r: Reports) -> list[str]:
    """Issue 12's comparison: every lever's evaluation on the same held-out seeds and metrics."""
    names = [n for n in r.data if n.startswith("lever:")]
    if not names:
        return []
    names = ["evaluation"] + names  # the shipped default first
    label = {n: n[len("lever:"):] if n != "evaluation" else "shipped default" for n in names}
    lines = ["## Levers tried for a world that holds together", "",
             "Each row: `python -m worldmodel.evaluation.evaluate` on the same held-out seeds and starts "
             "(its command below the table); permanence is of carried non-grass cells; smear is "
             "the worst open-loop bucket; non-grass share and scroll agreement over the whole "
             "semantic rollout.", "",
             "| lever | permanence h=1 | h=4 | h=16 | h=64 | smear (worst) | non-grass model / real "
             "(last bucket) | revealed TV | free moves scroll | blocked moves stay | fps (batch 1) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for n in names:
        sem = r.get(n, "semantic")
        pm, b, sc = sem["permanence"]["model"], sem["buckets"], sem["scroll"]["model"]
        last = ordered(b["model"])[-1]
        lines.append(
            f"| {label[n]} | " + " | ".join(num(pm.get(h, {}).get("non_grass"), ".3f")
                                                     for h in ("1", "4", "16", "64"))
            + f" | {max(v['smear'] for v in b['model'].values()):.3f} | "
            f"{num(b['model'][last]['non_grass'], '.3f')} / {num(b['real'][last]['non_grass'], '.3f')} | "
            f"{num(sem['revealed']['model']['tv'], '.3f')} | {num(sc['free_moves']['agree'], '.3f')} | "
            f"{num(sc['blocked_moves']['agree'], '.3f')} | {_lever_fps(r, n)} |")
    lines.append("")
    for n in names:
        lines.append(f"- {label[n]}: {r.source(n)}")
        bench = _lever_bench(n)
        if bench in r:
            lines.append(f"  - fps: {r.source(bench)}")
    return lines + [""]


SECTIONS: tuple[Callable[[Reports], list[str]], ...] = (
    semantic_section, tiles_section, levers_section, psnr_section, bench_section,
    revisit_section, memory_fps_section, plan_section)


def write_card(checkpoint: Path, r: Reports) -> str:
    lines = model_section(checkpoint, r)
    for section in SECTIONS:
        lines += section(r)
    return "\n".join(lines)

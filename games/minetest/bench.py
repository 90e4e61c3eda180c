"""Measure the real Minetest as a data source: `python -m games.minetest.bench --out DIR`.

Writes DIR/minetest_bench.json (and prints it) with the figures below; `--readme README.md --from
DIR [DIR ...]` writes the README's Minetest table from such reports.

- speed: steps per second of the explore policy at 64x64 with labels on the frames that carry
  them (`--label-size`, `--label-every`), median over episodes; reset seconds (median, max); the
  label map's own cost at 16, 32 and 64 pixels; hours for 100,000 frames at those rates with
  episodes of `--length` steps;
- determinism: each of `--det-seeds` worlds played twice with the same explore actions:
  the share of steps whose poses and node hashes agree, the share of bit-identical frames, and
  how much the others differ (pixels, largest channel difference);
- labels against the render: on labelled frames, how often the label map's sky agrees with the
  frame's sky colour, and how often a label edge (any label change between neighbouring label
  pixels) falls where the frame has an edge;
- label shares: the share of every label over the labelled pixels of the episodes played.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from games.minetest.env import MinetestEnv
from games.minetest.labels import LABEL_NAMES, upsample
from games.minetest.policies import POLICIES
from worldmodel.cli import common_flags

SKY = LABEL_NAMES.index("sky")


def sky_agreement(frame: np.ndarray, labels: np.ndarray) -> float | None:
    """Share of pixels where the label map says sky exactly where the frame shows the noon sky's
    blue; None for a frame that is all sky or has none."""
    sky = upsample(labels, frame.shape[0]) == SKY
    if sky.all() or not sky.any():
        return None
    f = frame.astype(int)
    blue = (f[..., 2] > f[..., 0] + 30) & (f[..., 2] > 150)
    return float((sky == blue).mean())


def edge_agreement(frame: np.ndarray, labels: np.ndarray) -> float | None:
    """Of the label map's edges (neighbouring label pixels that differ), the share where the
    frame, averaged to the label resolution, changes colour by more than 24 levels."""
    k = frame.shape[0] // labels.shape[0]
    small = frame.astype(float).reshape(labels.shape[0], k, labels.shape[1], k, 3).mean((1, 3))
    lab_e = np.concatenate([(labels[:, 1:] != labels[:, :-1]).ravel(), (labels[1:] != labels[:-1]).ravel()])
    img_e = np.concatenate([np.abs(small[:, 1:] - small[:, :-1]).max(-1).ravel(),
                            np.abs(small[1:] - small[:-1]).max(-1).ravel()]) > 24
    return float(img_e[lab_e].mean()) if lab_e.any() else None


def play(env: MinetestEnv, seed: int, length: int) -> dict:
    t = time.perf_counter()
    frames = [env.reset(seed)]
    reset_s = time.perf_counter() - t
    poses, hashes, labels = [env.pose()], [env.node_hash], [env.labels()]
    t = time.perf_counter()
    for a in itertools.islice(POLICIES["explore"](seed, length), length):
        frames.append(env.step(a).obs)
        poses.append(env.pose())
        hashes.append(env.node_hash)
        labels.append(env.labels())
    steps_s = length / (time.perf_counter() - t)
    return {"frames": np.stack(frames), "poses": np.stack(poses), "hashes": hashes,
            "labels": labels, "reset_s": reset_s, "steps_per_s": steps_s,
            "kind": env.spawn.kind, "biome": env.spawn_info.get("biome")}


def label_cost(env: MinetestEnv, sizes=(16, 32, 64), n: int = 10) -> dict:
    out = {}
    for size in sizes:
        t = []
        for _ in range(n):
            a = time.perf_counter()
            env.command(f"act noop {size}")
            env._read_labels(env._seq)
            t.append(time.perf_counter() - a)
        base = []
        for _ in range(n):
            a = time.perf_counter()
            env.command("act noop 0")
            base.append(time.perf_counter() - a)
        out[str(size)] = round(1000 * (np.median(t) - np.median(base)), 1)
    return out


def readme_table(reports: dict[str, dict]) -> str:
    """The README's Minetest table, from reports by folder (each a minetest_bench.json)."""
    rows = ["| setting (folder) | steps/s (median) | reset s (median / max) | 100k frames, h | "
            "label map ms (16 / 32 / 64 px) | poses, node hashes equal | frames bit-identical "
            "(differing: median pixels) | sky agreement | label edges on frame edges |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for folder, r in reports.items():
        st, sp, d, lab = r["settings"], r["speed"], r["determinism"], r["labels_vs_render"]
        cost = " / ".join(str(sp["label_map_ms"][k]) for k in ("16", "32", "64"))
        if d:
            det = f"{d['poses_equal']:.3f}, {d['node_hashes_equal']:.3f}"
            px = np.median([w["differing_frames_pixels_median"] for w in d["worlds"]])
            ident = f"{d['frames_identical']:.3f} ({px:.0f} of 4096)"
        else:
            det = ident = "-"
        rows.append(f"| {st['label_size']} px labels every {st['label_every']} frame(s) (`{folder}`) "
                    f"| {sp['steps_per_s_median']} | {sp['reset_s_median']} / {sp['reset_s_max']} "
                    f"| {sp['hours_for_100k_frames']} | {cost} | {det} | {ident} "
                    f"| {lab['sky_agreement_mean']} | {lab['label_edges_on_frame_edges']} |")
    first = next(iter(reports.values()))
    shares = ", ".join(f"{k} {v:.3f}" for k, v in first["label_shares"].items())
    worlds = ", ".join(f"{w['kind']} ({w['biome']})" for w in first["worlds"])
    return "\n".join(rows) + (f"\n\nLabel shares over the labelled pixels of those episodes: {shares}."
                             f"\nTheir worlds (start kind, biome): {worlds}.\n")


def write_readme(readme: Path, folders: list[str]) -> None:
    reports = {f: json.loads((Path(f) / "minetest_bench.json").read_text()) for f in folders}
    text = readme.read_text()
    begin, end = "<!-- minetest:begin -->", "<!-- minetest:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"{readme} has no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    readme.write_text(head + begin + "\n" + readme_table(reports) + end + rest.split(end, 1)[1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common_flags(out={"default": "runs/minetest_bench"})])
    p.add_argument("--episodes", type=int, default=5, help="speed and label episodes (one world each)")
    p.add_argument("--length", type=int, default=200, help="steps per episode")
    p.add_argument("--det-seeds", type=int, default=5, help="worlds played twice for determinism")
    p.add_argument("--det-length", type=int, default=100)
    p.add_argument("--label-size", type=int, default=32)
    p.add_argument("--label-every", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=1_000_000, help="first world (held-out range)")
    p.add_argument("--readme", default=None, metavar="README",
                   help="write the table of the reports in --from into README (no measuring)")
    p.add_argument("--from", dest="reports", nargs="+", default=[], metavar="DIR",
                   help="report folders for --readme")
    args = p.parse_args(argv)
    if args.readme:
        write_readme(Path(args.readme), args.reports or [args.out])
        return {}

    env = MinetestEnv(label_size=args.label_size, label_every=args.label_every)
    try:
        runs = [play(env, args.first_seed + i, args.length) for i in range(args.episodes)]
        cost = label_cost(env)
        det = []
        for i in range(args.det_seeds):
            seed = args.first_seed + 500 + i
            a, b = play(env, seed, args.det_length), play(env, seed, args.det_length)
            same_frame = [np.array_equal(x, y) for x, y in zip(a["frames"], b["frames"])]
            diff = [(x != y).any(-1).sum() for x, y, s in zip(a["frames"], b["frames"], same_frame) if not s]
            most = [int(np.abs(x.astype(int) - y).max()) for x, y, s in
                    zip(a["frames"], b["frames"], same_frame) if not s]
            det.append({"seed": seed, "kind": a["kind"],
                        "poses_equal": float(np.mean(np.all(a["poses"] == b["poses"], 1))),
                        "hashes_equal": float(np.mean([x == y for x, y in zip(a["hashes"], b["hashes"])])),
                        "frames_identical": float(np.mean(same_frame)),
                        "differing_frames_pixels_median": float(np.median(diff)) if diff else 0.0,
                        "differing_frames_max_channel_diff_median": float(np.median(most)) if most else 0.0})
    finally:
        env.close()

    sky, edge, counts = [], [], np.zeros(len(LABEL_NAMES))
    for r in runs:
        for f, lab in zip(r["frames"], r["labels"]):
            if lab is None:
                continue
            for fn, acc in ((sky_agreement, sky), (edge_agreement, edge)):
                v = fn(f, lab)
                if v is not None:
                    acc.append(v)
            counts += np.bincount(lab.ravel(), minlength=len(LABEL_NAMES))
    steps_s = float(np.median([r["steps_per_s"] for r in runs]))
    reset_s = [r["reset_s"] for r in runs]
    per_episode_s = args.length / steps_s + float(np.median(reset_s))
    report = {
        "settings": {"size": 64, "label_size": args.label_size, "label_every": args.label_every,
                     "episodes": args.episodes, "length": args.length, "policy": "explore",
                     "first_seed": args.first_seed},
        "speed": {"steps_per_s_median": round(steps_s, 2),
                  "steps_per_s": [round(r["steps_per_s"], 2) for r in runs],
                  "reset_s_median": round(float(np.median(reset_s)), 2),
                  "reset_s_max": round(float(max(reset_s)), 2),
                  "label_map_ms": cost,
                  "hours_for_100k_frames": round(100_000 / args.length * per_episode_s / 3600, 2)},
        "worlds": [{"kind": r["kind"], "biome": r["biome"]} for r in runs],
        "determinism": None if not det else {
            "poses_equal": float(np.mean([d["poses_equal"] for d in det])),
            "node_hashes_equal": float(np.mean([d["hashes_equal"] for d in det])),
            "frames_identical": float(np.mean([d["frames_identical"] for d in det])),
            "worlds": det},
        "labels_vs_render": {"sky_agreement_mean": round(float(np.mean(sky)), 4) if sky else None,
                             "label_edges_on_frame_edges": round(float(np.mean(edge)), 4) if edge else None,
                             "frames": len(sky)},
        "label_shares": {n: round(float(c / counts.sum()), 4) for n, c in zip(LABEL_NAMES, counts)},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "minetest_bench.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    from worldmodel.cli import run_cli

    run_cli(main)

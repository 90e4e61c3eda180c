"""Corrupt and tampered saved worlds (issue 24), and a snapshot of everything a load could change.

`VARIANTS[name](folder)` damages a copy of a good save in place; every one must be refused with
one clear error and leave the session exactly as it was (`snapshot`, `assert_same`). Shared by
the session's, the service's and the command line's tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

MANIFEST, WORLD, VIEW = "memory.json", "world.safetensors", "view_memory.safetensors"


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _rewrite(name: str, fn: Callable[[dict], dict]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        state, meta = _tensors(folder / name)
        save_file({k: v.contiguous() for k, v in fn(state).items()}, str(folder / name), meta)
    return change


def _manifest(fn: Callable[[dict], object]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        info = json.loads((folder / MANIFEST).read_text())
        (folder / MANIFEST).write_text(json.dumps(fn(info)))
    return change


def _set(key: str, value) -> Callable[[dict], dict]:
    return lambda d: {**d, key: value}


def _drop(key: str) -> Callable[[dict], dict]:
    return lambda d: {k: v for k, v in d.items() if k != key}


def _truncate(name: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return change


def _random(name: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        n = (folder / name).stat().st_size
        (folder / name).write_bytes(np.random.default_rng(0).integers(0, 256, n, np.uint8)
                                    .tobytes())
    return change


def _missing(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def _directory(name: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()
    return change


def _all_empty(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            p.write_bytes(b"")


def _context_5(folder: Path) -> None:
    """As saved by a session keeping 5 context frames: its cache holds 5."""
    def grow(state: dict) -> dict:
        out = dict(state)
        for k, v in state.items():
            if k.startswith("cache."):
                out[k] = torch.cat([v, v], -2)[..., :5, :]
        return out

    _rewrite(WORLD, grow)(folder)
    _manifest(_set("context", 5))(folder)


def _steps_infinity(folder: Path) -> None:
    info = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**info, "steps": float("inf")}))  # "Infinity"


def _lora_listed_but_absent(folder: Path) -> None:
    shutil.rmtree(folder / "lora", ignore_errors=True)
    _manifest(lambda d: {**d, "stores": sorted(set(d["stores"]) | {"lora"})})(folder)


def _last_cache_layer(state: dict) -> dict:
    key = sorted(k for k in state if k.startswith("cache."))[-1]
    return {**state, key: state[key][..., :-1]}


VARIANTS: dict[str, Callable[[Path], None]] = {
    "world_truncated": _truncate(WORLD),
    "world_random_bytes": _random(WORLD),
    "world_missing": _missing(WORLD),
    "manifest_truncated": _truncate(MANIFEST),
    "manifest_random_bytes": _random(MANIFEST),
    "manifest_missing": _missing(MANIFEST),
    "view_truncated": _truncate(VIEW),
    "view_random_bytes": _random(VIEW),
    "view_missing": _missing(VIEW),
    "world_a_directory": _directory(WORLD),
    "manifest_a_directory": _directory(MANIFEST),
    "all_files_empty": _all_empty,
    "context_of_5_frames": _context_5,
    "format_version_2": _manifest(_set("version", 2)),
    "steps_a_string": _manifest(_set("steps", "3")),
    "steps_a_float": _manifest(_set("steps", 3.5)),
    "steps_infinity": _steps_infinity,
    "stores_an_int": _manifest(_set("stores", 5)),
    "stores_a_lora_it_lacks": _lora_listed_but_absent,
    "manifest_a_list": _manifest(lambda d: [d]),
    "no_last": _rewrite(WORLD, _drop("last")),
    "no_last_clean": _rewrite(WORLD, _drop("last_clean")),
    "no_noise_state": _rewrite(WORLD, _drop("noise_state")),
    "bad_noise_state": _rewrite(WORLD, lambda s: {**s, "noise_state":
                                                  torch.zeros_like(s["noise_state"])}),
    "last_wrong_shape": _rewrite(WORLD, lambda s: {**s, "last": s["last"][..., :-1]}),
    "last_clean_wrong_shape": _rewrite(WORLD, lambda s: {**s, "last_clean":
                                                         s["last_clean"][..., :-1, :]}),
    "last_cache_layer_wrong_shape": _rewrite(WORLD, _last_cache_layer),
    "view_one_tile_for_all_cells": _rewrite(VIEW, lambda s: {**s, "tiles": s["tiles"][:1]}),
    "view_clock_empty": _rewrite(VIEW, lambda s: {**s, "clock": s["clock"][:0]}),
    "view_pose_wrong_shape": _rewrite(VIEW, lambda s: {**s, "pose": s["pose"][:1]}),
    "view_float_cells": _rewrite(VIEW, lambda s: {**s, "cells": s["cells"].float()}),
}


def corrupt_copy(good: Path, folder: Path, variant: str) -> Path:
    shutil.copytree(good, folder)
    VARIANTS[variant](folder)
    return folder


def snapshot(sess) -> dict:
    """Everything of a WorldSession a load could change, copied."""
    ro = sess.rollout_state
    out = {"steps": sess.steps, "world_steps": list(sess.world_steps),
           "memory_worlds": list(sess.memory_worlds), "frame": np.array(sess.frame),
           "last": ro.last.clone(), "last_clean": ro.last_clean.clone(),
           "noise": [g.get_state().clone() for g in ro.gens],
           "has_lora": sess._memory is not None}
    for name, lc in ro.cache.layers.items():
        out[f"cache.{name}"] = (lc.k.clone(), lc.v.clone())
    if sess.view is not None:
        v = sess.view
        out["view"] = tuple(t.clone() for t in (v.tiles, v.seen, v.pose, v.clock, v.on))
    if sess._memory is not None:
        from memory.lora import lora_tensors

        out["lora"] = {k: t.detach().clone() for k, t in lora_tensors(sess._memory.model).items()}
        out["lora_targets"] = [{k: t.detach().clone() for k, t in tgt.items()}
                               for tgt in sess._memory._targets]
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), k
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=k)
        elif isinstance(x, tuple):
            assert all(torch.equal(p, q) for p, q in zip(x, y)), k
        elif isinstance(x, list) and x and isinstance(x[0], (torch.Tensor, dict)):
            for p, q in zip(x, y):
                if isinstance(p, dict):
                    assert all(torch.equal(p[n], q[n]) for n in p), k
                else:
                    assert torch.equal(p, q), k
        elif isinstance(x, dict):
            assert all(torch.equal(x[n], y[n]) for n in x), k
        else:
            assert x == y, k

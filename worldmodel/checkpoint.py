"""Checkpoints: `model.safetensors` (weights, EMA when trained) + `config.json` (+ `metrics.json`).

Training state (optimizer, step, RNG) lives apart in `train_state.safetensors` + `train_state.json`
so the shipped checkpoint stays small. Everything is written to a temporary name, then renamed.
Nothing here unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from worldmodel import tensorfile
from worldmodel.config import Config, config_from_json, to_dict
from worldmodel.data.episode import write_json_atomic
from worldmodel.dynamics import Denoiser
from worldmodel.game import find_game

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
TRAIN_STATE = "train_state.safetensors"
TRAIN_META = "train_state.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or does not match its config."""


def _save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path, meta: dict | None = None) -> None:
    tensorfile.write(path, tensors, meta or {})


def read_metrics(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint folder's metrics.json (train step, lineage, evaluation), or None if absent."""
    metrics_path = Path(path) / METRICS
    return json.loads(metrics_path.read_text()) if metrics_path.is_file() else None


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: Config,
                    metrics: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _save_tensors_atomic(dict(model.state_dict()), path / WEIGHTS, {"format": "worldmodel-v1"})
    write_json_atomic(path / CONFIG, to_dict(cfg))
    if metrics is not None:
        write_json_atomic(path / METRICS, metrics)
    return path


def load_config_from_checkpoint(path: str | Path) -> Config:
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise CheckpointError(f"{path} is not a checkpoint: no {CONFIG}")
    try:
        return config_from_json((path / CONFIG).read_text())
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a ConfigError, deep nesting
        raise CheckpointError(f"{path / CONFIG} is not a valid model config: "
                              f"{type(e).__name__}: {str(e)[:200]}") from None


def name_side_file(path: str | Path, key: str, name: str) -> None:
    """Name a side file written into checkpoint folder `path` (a codebook, a land prior) in its
    config: `game.<key> = name` (the game's section), the config rewritten atomically."""
    cfg = load_config_from_checkpoint(path)
    cfg.game[key] = name
    write_json_atomic(Path(path) / CONFIG, to_dict(cfg))


def attach_side_file(path: str | Path, key: str, name: str,
                     save: Callable[[Path], object]) -> None:
    """Write a side file (a codebook, a land prior) into checkpoint folder `path` with
    `save(file)` and name it in the config (`game.<key> = name`); the folder is checked to
    be a checkpoint before anything is written into it."""
    load_config_from_checkpoint(path)
    save(Path(path) / name)
    name_side_file(path, key, name)


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str,
                     against: str, error: type[Exception]) -> None:
    """Same keys, same shapes, finite values; else `error` naming the first tensor that is off."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise error(f"{where} does not match {against}: missing {missing[:5]}, "
                    f"unexpected {unexpected[:5]}")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise error(f"{where}: {k} has shape {tuple(v.shape)}, {against} expects "
                        f"{tuple(expected[k].shape)}")
        if not torch.isfinite(v).all():
            raise error(f"{where}: {k} holds NaN or infinite values")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Denoiser, Config]:
    """Build the model from config.json and load its weights; errors name what is wrong."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    cfg = load_config_from_checkpoint(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS}")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is corrupt or not a safetensors file: {e}") from e
    model = Denoiser(cfg.model)
    check_state_dict(state, model.state_dict(), str(weights), "its config", CheckpointError)
    model.load_state_dict(state)
    game = find_game(cfg.model.game_name)
    if game is not None:  # the game's stages of the frame pipeline, from their side files
        model.stages = game.stages(cfg, path, device)
    return model.to(device).eval(), cfg


def save_train_state(path: str | Path, optimizer: torch.optim.Optimizer,
                     raw_weights: dict[str, torch.Tensor],
                     info: dict[str, Any]) -> None:
    """Optimizer moments + raw (non-EMA) weights for resuming; kept beside the checkpoint."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {f"raw.{k}": v for k, v in raw_weights.items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v
    _save_tensors_atomic(tensors, path / TRAIN_STATE)
    write_json_atomic(path / TRAIN_META, dict(info, param_groups=opt["param_groups"]))


def load_train_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict[str, Any]]:
    """-> (raw weights, optimizer state dict, info)."""
    path = Path(path)
    try:
        tensors = load_file(str(path / TRAIN_STATE))
        info = json.loads((path / TRAIN_META).read_text())
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot resume from {path}: {e}") from e
    raw = {k[4:]: v for k, v in tensors.items() if k.startswith("raw.")}
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    opt = {"state": state, "param_groups": info.pop("param_groups")}
    return raw, opt, info

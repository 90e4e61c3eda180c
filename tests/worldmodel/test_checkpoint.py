"""Checkpoints: round trip and errors that name what is wrong (worldmodel/checkpoint.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import smooth_frames
from worldmodel.checkpoint import (CONFIG, METRICS, WEIGHTS, CheckpointError, load_checkpoint,
                                   load_train_state, save_checkpoint, save_train_state)
from worldmodel.config import to_dict


def forward(model, cfg) -> torch.Tensor:
    s = cfg.model.frame_size
    x = smooth_frames((1, 3, 3, s, s), 0)
    prev = smooth_frames((1, 3, 3, s, s), 1)
    act = torch.nn.functional.one_hot(torch.tensor([[0, 3, 5]]), 17).float()
    with torch.no_grad():
        return model(x, prev, torch.full((1, 3), 0.5), torch.full((1, 3), 0.1),
                     torch.ones(1, 3, dtype=torch.bool), act, torch.zeros(1, 3, dtype=torch.bool))


@pytest.fixture
def ckpt(tmp_path, tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    return save_checkpoint(tmp_path / "ckpt", model, tiny_cfg, metrics={"train_step": 7}), model


def test_round_trip_gives_identical_outputs_and_config(ckpt, tiny_cfg):
    path, model = ckpt
    loaded, cfg = load_checkpoint(path)
    assert to_dict(cfg) == to_dict(tiny_cfg)
    assert not loaded.training
    assert torch.equal(forward(loaded, cfg), forward(model, tiny_cfg))
    assert json.loads((path / METRICS).read_text()) == {"train_step": 7}
    assert not [p.name for p in path.iterdir() if ".tmp" in p.name]  # atomic writes cleaned up


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match=f"no {CONFIG}"):
        load_checkpoint(tmp_path)


def test_missing_weights_is_a_clear_error(ckpt):
    path, _ = ckpt
    (path / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match=f"has no {WEIGHTS}"):
        load_checkpoint(path)


def test_corrupt_weights_file_is_named(ckpt):
    path, _ = ckpt
    (path / WEIGHTS).write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match=f"{WEIGHTS}.*corrupt"):
        load_checkpoint(path)


def test_truncated_weights_file_is_named(ckpt):
    path, _ = ckpt
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=WEIGHTS):
        load_checkpoint(path)


def test_unknown_config_key_is_named(ckpt):
    path, _ = ckpt
    data = json.loads((path / CONFIG).read_text())
    data["model"]["wings"] = 2
    (path / CONFIG).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"model\.wings"):
        load_checkpoint(path)


def test_garbled_config_is_named(ckpt):
    path, _ = ckpt
    (path / CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{CONFIG} is not a valid model config"):
        load_checkpoint(path)


def test_shape_mismatch_names_the_tensor(ckpt):
    path, _ = ckpt
    state = load_file(str(path / WEIGHTS))
    state["head.bias"] = torch.zeros(5)
    save_file(state, str(path / WEIGHTS))
    with pytest.raises(CheckpointError, match=r"head\.bias has shape \(5,\)"):
        load_checkpoint(path)


def test_config_that_does_not_match_the_weights_is_named(ckpt):
    path, _ = ckpt
    data = json.loads((path / CONFIG).read_text())
    data["model"]["channels"] = [8, 16, 32]
    (path / CONFIG).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="does not match its config: missing"):
        load_checkpoint(path)


def test_nan_weights_are_named(ckpt):
    path, _ = ckpt
    state = load_file(str(path / WEIGHTS))
    state["stem.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(path / WEIGHTS))
    with pytest.raises(CheckpointError, match=r"stem\.weight holds NaN"):
        load_checkpoint(path)


def test_train_state_round_trip(tmp_path, tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sum(p.sum() for p in model.parameters()).backward()
    opt.step()
    save_train_state(tmp_path, opt, dict(model.state_dict()), {"step": 3})
    raw, opt_state, info = load_train_state(tmp_path)
    assert info == {"step": 3}
    assert all(torch.equal(raw[k], v) for k, v in model.state_dict().items())
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(opt_state)
    for pid, st in opt.state_dict()["state"].items():
        assert torch.equal(fresh.state_dict()["state"][pid]["exp_avg"], st["exp_avg"])
    with pytest.raises(CheckpointError, match="cannot resume"):
        load_train_state(tmp_path / "nothing")

"""The temporal LoRA (memory/lora.py, memory/config.py): exact no-op when fresh, frozen base,
configurable targets, peft-format save/load."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import TINY_YAML
from memory.config import MemoryConfig, load_configs, load_memory_config
from memory.lora import (CONFIG_NAME, WEIGHTS_NAME, MemoryFileError, add_lora, base_tensors,
                         load_lora, lora_tensors, reset_lora, save_lora)
from memory_fixtures import randomize_lora_, rollout_frames
from worldmodel.config import ConfigError, load_config


def test_fresh_lora_is_an_exact_no_op(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    lora = add_lora(copy.deepcopy(base), MemoryConfig(rank=4))
    names = {n.rsplit(".lora_", 1)[0] for n in lora_tensors(lora)}
    assert names == {"down.1.0.temporal.qkv", "down.1.0.temporal.out", "mid.temporal.qkv",
                     "mid.temporal.out"}
    assert torch.equal(rollout_frames(base, tiny_cfg), rollout_frames(lora, tiny_cfg))


def test_base_is_frozen_and_only_the_adapter_trains(tiny_cfg, perturbed_model):
    lora = add_lora(perturbed_model(tiny_cfg), MemoryConfig(rank=4))
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable == set(lora_tensors(lora)) and trainable
    assert not any(".lora_" in n for n in base_tensors(lora))


def test_a_live_adapter_changes_outputs_and_reset_restores_them(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    lora = add_lora(copy.deepcopy(base), MemoryConfig(rank=4))
    randomize_lora_(lora)
    assert not torch.equal(rollout_frames(base, tiny_cfg), rollout_frames(lora, tiny_cfg))
    reset_lora(lora)
    assert torch.equal(rollout_frames(base, tiny_cfg), rollout_frames(lora, tiny_cfg))


def test_target_patterns_are_configurable(tiny_cfg, perturbed_model):
    lora = add_lora(perturbed_model(tiny_cfg), MemoryConfig(rank=2, target_modules=["mid.temporal.out"]))
    assert sorted(lora_tensors(lora)) == ["mid.temporal.out.lora_A.memory.weight",
                                          "mid.temporal.out.lora_B.memory.weight"]
    with pytest.raises(ConfigError, match="memory.target_modules"):  # a config error: one line
        add_lora(perturbed_model(tiny_cfg), MemoryConfig(target_modules=["no_such_layer"]))


def test_save_load_round_trip_in_peft_format(tiny_cfg, perturbed_model, tmp_path):
    mcfg = MemoryConfig(rank=4, alpha=8.0)
    a = add_lora(perturbed_model(tiny_cfg), mcfg)
    randomize_lora_(a)
    save_lora(a, mcfg, tmp_path / "mem", meta={"frames_seen": "12"})
    assert {p.name for p in (tmp_path / "mem").iterdir()} == {WEIGHTS_NAME, CONFIG_NAME}
    saved = json.loads((tmp_path / "mem" / CONFIG_NAME).read_text())
    assert saved["peft_type"] == "LORA" and saved["r"] == 4 and saved["lora_alpha"] == 8.0
    b = add_lora(perturbed_model(tiny_cfg), mcfg)
    assert load_lora(b, tmp_path / "mem")["frames_seen"] == "12"
    for (na, pa), (nb, pb) in zip(sorted(lora_tensors(a).items()), sorted(lora_tensors(b).items())):
        assert na == nb and torch.equal(pa, pb)
    assert torch.equal(rollout_frames(a, tiny_cfg), rollout_frames(b, tiny_cfg))
    other = add_lora(perturbed_model(tiny_cfg), MemoryConfig(rank=2))
    with pytest.raises(MemoryFileError, match="shape"):
        load_lora(other, tmp_path / "mem")
    with pytest.raises(MemoryFileError):
        load_lora(other, tmp_path / "nothing_here")
    (tmp_path / "mem" / WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(MemoryFileError, match="corrupt"):
        load_lora(other, tmp_path / "mem")


def test_memory_config_from_yaml_section_and_overrides(tmp_path):
    assert load_memory_config(TINY_YAML) == MemoryConfig()  # no section: defaults
    path = tmp_path / "c.yaml"
    path.write_text(TINY_YAML.read_text() + "memory:\n  rank: 8\n  loss: next_frame\n")
    cfg, mcfg = load_configs(path, ["memory.lr=3e-4"])
    assert cfg.model.channels == [8, 16] and (mcfg.rank, mcfg.loss, mcfg.lr) == (8, "next_frame", 3e-4)
    assert load_memory_config(path, ["alpha=4"]).alpha == 4.0
    with pytest.raises(ConfigError, match="memory.nope"):
        load_configs(path, ["memory.nope=1"])
    with pytest.raises(ConfigError, match="loss"):
        MemoryConfig(loss="sideways")
    # The world model's own loader takes the same file (its training ignores the memory
    # section) but still rejects a wrong key or shape there.
    assert load_config(path) == cfg
    with pytest.raises(ConfigError, match="memory.nope"):
        load_config(path, ["memory.nope=1"])
    with pytest.raises(ConfigError, match="memory must be a mapping"):
        load_config(path, ["memory=3"])

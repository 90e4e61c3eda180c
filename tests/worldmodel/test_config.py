"""Typed configs: unknown keys and wrong types are errors that name the key (worldmodel/config.py)."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, TINY_YAML
from worldmodel.config import (Config, ConfigError, config_from_json, load_config, to_dict)


def test_shipped_configs_load():
    tiny = load_config(TINY_YAML)
    assert tiny.model.channels == [8, 16] and tiny.data.window == 4
    crafter = load_config(ROOT / "configs" / "crafter.yaml")
    assert crafter.model.frame_size == 64


def test_overrides_set_typed_values():
    cfg = load_config(TINY_YAML, ["train.lr=1e-3", "model.channels=[4, 8]", "train.steps=7",
                                  "data.train=/tmp/x"])
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.model.channels == [4, 8] and cfg.train.steps == 7 and cfg.data.train == "/tmp/x"
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0  # ints widen to float


def test_later_override_wins_and_untouched_keys_keep_defaults():
    cfg = load_config(TINY_YAML, ["train.lr=1e-3", "train.lr=2e-3"])
    assert cfg.train.lr == 2e-3
    assert cfg.train.grad_clip == Config().train.grad_clip


def test_unknown_yaml_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  chanels: [8, 16]\n")
    with pytest.raises(ConfigError, match=r"model\.chanels.*takes: .*channels"):
        load_config(path)


def test_unknown_section_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"config\.optim"):
        load_config(path)


def test_unknown_override_key_is_named():
    with pytest.raises(ConfigError, match=r"train\.learning_rate"):
        load_config(TINY_YAML, ["train.learning_rate=1e-3"])


@pytest.mark.parametrize("override, where", [
    ("train.steps=abc", "train.steps must be int"),
    ("train.steps=1.5", "train.steps must be int"),
    ("train.steps=true", "train.steps must be int"),
    ("train.lr=fast", "train.lr must be a number"),
    ("train.lr=true", "train.lr must be a number"),
    ("model.channels=8", "model.channels must be a list"),
    ("model.channels=[8, x]", r"model.channels\[1\] must be int"),
    ("data.train=3", "data.train must be str"),
    ("model=3", "model must be a mapping"),
])
def test_type_errors_are_caught(override, where):
    with pytest.raises(ConfigError, match=where):
        load_config(TINY_YAML, [override])


def test_malformed_override_and_missing_file_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(TINY_YAML, ["train.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_json_round_trip():
    cfg = load_config(TINY_YAML, ["train.lr=5e-4"])
    assert to_dict(config_from_json(json.dumps(to_dict(cfg)))) == to_dict(cfg)


def test_exponent_without_a_dot_is_a_float_in_yaml_files_too(tmp_path):
    """YAML 1.1 reads `1e-3` as a string; a float field must still get 0.001."""
    path = tmp_path / "lr.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-2\n")
    cfg = load_config(path)
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 5e-2


def test_an_even_shift_kernel_is_a_config_error():
    with pytest.raises(ConfigError, match="shift_kernel must be 0 \\(off\\) or odd, got 4"):
        load_config(None, ["model.shift_kernel=4"])
    assert load_config(None, ["model.shift_kernel=5"]).model.shift_kernel == 5


def test_the_game_owns_its_section_of_the_config():
    """Crafter's keys live in `game:`, checked against the game's own defaults."""
    cfg = load_config(ROOT / "configs" / "crafter.yaml", ["game.land_prior=land.safetensors"])
    assert cfg.game == {"tile_codebook": "", "land_prior": "land.safetensors", "night": False,
                        "status": False, "creatures": False}
    assert load_config(ROOT / "configs" / "crafter.yaml", ["game.night=true"]).game["night"] is True
    with pytest.raises(ConfigError, match=r"game\.land_prir.*takes: creatures, land_prior, night, status, tile_codebook"):
        load_config(ROOT / "configs" / "crafter.yaml", ["game.land_prir=x"])
    with pytest.raises(ConfigError, match=r"game\.tile_codebook must be str"):
        load_config(ROOT / "configs" / "crafter.yaml", ["game.tile_codebook=3"])
    with pytest.raises(ConfigError, match="game.*mapping"):
        load_config(ROOT / "configs" / "crafter.yaml", ["game=3"])


def test_an_older_config_with_the_games_keys_in_diffusion_still_loads():
    from worldmodel.config import config_from_json

    old = to_dict(load_config(ROOT / "configs" / "crafter.yaml"))
    del old["game"]
    old["diffusion"]["tile_codebook"] = "codebook.safetensors"
    cfg = config_from_json(json.dumps(old))
    assert cfg.game["tile_codebook"] == "codebook.safetensors" and cfg.game["land_prior"] == ""
    assert "tile_codebook" not in to_dict(cfg)["diffusion"]

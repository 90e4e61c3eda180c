"""The temporal LoRA: peft adapters on the denoiser's temporal attention, and their lifecycle.

`add_lora` injects an adapter named "memory" in place (peft's `inject_adapter_in_model`) and
freezes every base weight. B starts at zero, so a fresh (or reset) adapter adds exactly 0.0 to
each targeted layer: the model's outputs are bit-identical to the base model's. A memory is
saved in peft's adapter format (`adapter_model.safetensors` + `adapter_config.json`), so peft
tools can read it and `load_lora` can resume a world from it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft import set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from memory.config import MemoryConfig
from worldmodel.checkpoint import check_state_dict

ADAPTER = "memory"
WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"


class MemoryFileError(ValueError):
    """A saved memory that is missing, corrupt, or made for a different adapter."""


def lora_config(mcfg: MemoryConfig, base: str | None = None) -> LoraConfig:
    return LoraConfig(r=mcfg.rank, lora_alpha=mcfg.alpha, target_modules=list(mcfg.target_modules),
                      lora_dropout=0.0, bias="none", init_lora_weights=True,
                      base_model_name_or_path=base)


def add_lora(model: nn.Module, mcfg: MemoryConfig) -> nn.Module:
    """Inject the memory adapter into `model` in place; base weights frozen, A seeded, B zero."""
    if has_lora(model):
        raise ValueError("the model already carries a memory adapter")
    inject_adapter_in_model(lora_config(mcfg), model, adapter_name=ADAPTER)
    if not lora_layers(model):
        raise ValueError(f"memory.target_modules {mcfg.target_modules} match no layer of the model")
    for name, p in model.named_parameters():
        p.requires_grad_(is_lora_name(name))
    reset_lora(model, mcfg.seed)
    return model


def is_lora_name(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def has_lora(model: nn.Module) -> bool:
    return bool(lora_layers(model))


def lora_layers(model: nn.Module) -> list[tuple[str, BaseTunerLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def lora_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The adapter's parameters by name (live tensors, not copies)."""
    return {n: p for n, p in model.named_parameters() if is_lora_name(n)}


def base_tensors(model: nn.Module) -> dict[str, Tensor]:
    return {n: p for n, p in model.state_dict(keep_vars=True).items() if not is_lora_name(n)}


@torch.no_grad()
def reset_lora(model: nn.Module, seed: int = 0) -> None:
    """B <- 0 (the adapter becomes an exact no-op); A <- peft's Kaiming init from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(lora_tensors(model).items()):
        if ".lora_B." in name:
            p.zero_()
        else:
            a = torch.empty(p.shape)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)
            p.copy_(a)


@torch.no_grad()
def copy_lora(src: dict[str, Tensor], dst: dict[str, Tensor]) -> None:
    for name, p in dst.items():
        p.copy_(src[name])


def set_lora_enabled(model: nn.Module, enabled: bool) -> None:
    for _, layer in lora_layers(model):
        layer.enable_adapters(enabled)


def pristine_weights(model: nn.Module) -> dict[str, Tensor]:
    """Copies of the targeted layers' base weights, to merge the adapter into (see write_merged)."""
    return {n: layer.get_base_layer().weight.detach().clone() for n, layer in lora_layers(model)}


@torch.no_grad()
def write_merged(model: nn.Module, pristine: dict[str, Tensor], on: bool) -> None:
    """Inference without the adapter's per-call cost: each targeted layer's weight becomes
    W0 + peft's delta (scale * B @ A), recomputed from the pristine W0 every time, so nothing
    accumulates and B = 0 (or `on=False`) gives W0 bit for bit. Call with adapters disabled."""
    for name, layer in lora_layers(model):
        w = layer.get_base_layer().weight
        w.copy_(pristine[name] + layer.get_delta_weight(ADAPTER) if on else pristine[name])


def save_lora(model: nn.Module, mcfg: MemoryConfig, path: str | Path, base: str | None = None,
              meta: dict[str, str] | None = None) -> Path:
    """Write the adapter in peft's format into folder `path`, atomically (temporary folder, then
    rename of each file)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    with tempfile.TemporaryDirectory(dir=path, prefix=".tmp") as tmp:
        save_file({k: v.detach().float().contiguous().cpu() for k, v in state.items()},
                  str(Path(tmp) / WEIGHTS_NAME), metadata={"format": "pt", **(meta or {})})
        lora_config(mcfg, base).save_pretrained(tmp)
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            os.replace(Path(tmp) / name, path / name)
    return path


def read_lora_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads((path / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MemoryFileError(f"{path} is not a saved memory: {CONFIG_NAME}: {e}") from e


def load_lora(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a saved memory into the model's adapter (shapes must match); returns its metadata."""
    path = Path(path)
    saved = read_lora_config(path)
    try:
        state = load_file(str(path / WEIGHTS_NAME))
        from safetensors import safe_open

        with safe_open(str(path / WEIGHTS_NAME), "pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises several types for a bad file
        raise MemoryFileError(f"{path / WEIGHTS_NAME} is missing or corrupt: {e}") from e
    live = lora_tensors(model)
    expected = {k.replace(f".{ADAPTER}.", "."): v for k, v in live.items()}
    check_state_dict(state, expected, str(path),
                     f"this adapter (saved with r={saved.get('r')}, targets "
                     f"{saved.get('target_modules')})", MemoryFileError)
    with torch.no_grad():
        result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    if getattr(result, "unexpected_keys", None):
        raise MemoryFileError(f"{path}: peft did not place {result.unexpected_keys[:3]}")
    return meta

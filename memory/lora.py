"""The temporal LoRA: peft adapters on the denoiser's temporal attention, and their lifecycle.

`add_lora` injects an adapter named "memory" in place (peft's `inject_adapter_in_model`) and
freezes every base weight. B starts at zero, so a fresh (or reset) adapter adds exactly 0.0 to
each targeted layer: the model's outputs are bit-identical to the base model's. A memory is
saved in peft's adapter format (`adapter_model.safetensors` + `adapter_config.json`), so peft
tools can read it and `load_lora` can resume a world from it.

`BatchedLoRA` gives each of B worlds that share one forward pass its own adapter (stacked A and B
applied per world by forward hooks), where one world's adapter is merged into the weights.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft import NoMatchingPeftModuleError, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from memory.config import MemoryConfig
from worldmodel.checkpoint import check_state_dict
from worldmodel.config import ConfigError
from worldmodel.game import MemoryFileError

ADAPTER = "memory"
WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"


def lora_config(mcfg: MemoryConfig, base: str | None = None) -> LoraConfig:
    return LoraConfig(r=mcfg.rank, lora_alpha=mcfg.alpha, target_modules=list(mcfg.target_modules),
                      lora_dropout=0.0, bias="none", init_lora_weights=True,
                      base_model_name_or_path=base)


def add_lora(model: nn.Module, mcfg: MemoryConfig) -> nn.Module:
    """Inject the memory adapter into `model` in place; base weights frozen, A seeded, B zero."""
    if has_lora(model):
        raise ValueError("the model already carries a memory adapter")
    try:
        inject_adapter_in_model(lora_config(mcfg), model, adapter_name=ADAPTER)
    except NoMatchingPeftModuleError:
        pass  # the same answer as below
    if not lora_layers(model):
        raise ConfigError(f"memory.target_modules {mcfg.target_modules} match no layer of the model")
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


def reset_lora(model: nn.Module, seed: int = 0) -> None:
    """B <- 0 (the adapter becomes an exact no-op); A <- peft's Kaiming init from a fixed seed."""
    reset_lora_tensors(lora_tensors(model), seed)


@torch.no_grad()
def reset_lora_tensors(tensors: dict[str, Tensor], seed: int = 0) -> None:
    """`reset_lora` on adapter tensors by peft name (a model's, or one world's of a
    `BatchedLoRA`): the same names and seed give the same A, whoever holds them."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(tensors.items()):
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


def read_lora(model: nn.Module, path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(state, metadata) of a saved memory, checked against the model's adapter (the same
    tensors, shapes, finite values) but not applied: `apply_lora` puts it in."""
    path = Path(path)
    saved = read_lora_config(path)
    if not isinstance(saved, dict):
        raise MemoryFileError(f"{path / CONFIG_NAME} is not an adapter config")
    try:
        state = load_file(str(path / WEIGHTS_NAME))
        with safe_open(str(path / WEIGHTS_NAME), "pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:  # missing, truncated or not safetensors at all
        raise MemoryFileError(f"{path / WEIGHTS_NAME} is missing or corrupt: {e}") from None
    live = lora_tensors(model)
    expected = {k.replace(f".{ADAPTER}.", "."): v for k, v in live.items()}
    check_state_dict(state, expected, str(path),
                     f"this adapter (saved with r={str(saved.get('r'))[:20]}, targets "
                     f"{str(saved.get('target_modules'))[:100]})", MemoryFileError)
    return state, meta


def apply_lora(model: nn.Module, state: dict[str, Tensor], where: str = "a saved memory") -> None:
    """Put a state `read_lora` checked into the model's adapter."""
    with torch.no_grad():
        result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    if getattr(result, "unexpected_keys", None):
        raise MemoryFileError(f"{where}: peft did not place {result.unexpected_keys[:3]}")


def load_lora(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a saved memory into the model's adapter (shapes must match); returns its metadata."""
    state, meta = read_lora(model, path)
    apply_lora(model, state, str(path))
    return meta


def lora_delta(x: Tensor, a: Tensor, b: Tensor, scale: float) -> Tensor:
    """Per world, peft's LoRA term scale * (x @ A^T) @ B^T: x (n, L, in), a (n, r, in),
    b (n, out, r) -> (n, L, out)."""
    return torch.bmm(torch.bmm(x.to(a.dtype), a.transpose(1, 2)), b.transpose(1, 2)) * scale


class BatchedLoRA:
    """One adapter per world on a model that runs B worlds in one forward pass, where a single
    merged adapter cannot serve (it would apply to every world).

    Each peft layer of `model` (its own adapter switched off by the caller; it is left as scratch
    for save/load) gets a forward hook that adds world i's term scale * (x_i @ A_i^T) @ B_i^T to
    world i's rows of the output, from stacks A (B, r, in) and B (B, out, r). Rows must be
    world-major, as the denoiser's temporal layers lay them out: their input (b*h*w, t, c) holds
    world i in rows [i*h*w, (i+1)*h*w), so it is viewed as (b, h*w*t, c) and multiplied with
    `torch.bmm`. Only worlds switched on are computed; the others' rows are the base layer's output
    untouched, bit for bit, and with no world on the hooks return at once.

    `world_tensors(i)` gives world i's A and B as views named like peft's tensors, so `copy_lora`,
    `reset_lora_tensors` and the memory worker's swap write into one world in place.
    """

    def __init__(self, model: nn.Module, batch: int):
        if batch < 1:
            raise ValueError(f"a batched adapter needs at least one world, got {batch}")
        self.batch = batch
        self.stacks: dict[str, Tensor] = {}  # peft tensor name -> (B, *shape)
        live = lora_tensors(model)
        self._handles = []
        for name, layer in lora_layers(model):
            a_name, b_name = f"{name}.lora_A.{ADAPTER}.weight", f"{name}.lora_B.{ADAPTER}.weight"
            a, b = live[a_name].detach(), live[b_name].detach()
            self.stacks[a_name] = a.unsqueeze(0).repeat(batch, 1, 1)
            self.stacks[b_name] = torch.zeros(batch, *b.shape, dtype=b.dtype, device=b.device)
            hook = self._hook(self.stacks[a_name], self.stacks[b_name], layer.scaling[ADAPTER])
            self._handles.append(layer.register_forward_hook(hook))
        if not self.stacks:
            raise ValueError("the model carries no memory adapter to batch")
        self.device = next(iter(self.stacks.values())).device
        self.on = [False] * batch
        self._idx: Tensor | None = None  # the worlds switched on (None: none)
        self._all = False

    def world_tensors(self, world: int) -> dict[str, Tensor]:
        """World `world`'s adapter: views into the stacks, by peft name."""
        return {name: stack[world] for name, stack in self.stacks.items()}

    def set_on(self, world: int, on: bool) -> None:
        """Apply world `world`'s adapter (on) or give it the base layer's outputs (off)."""
        self.on[world] = bool(on)
        worlds = [i for i, o in enumerate(self.on) if o]
        self._idx = torch.tensor(worlds, device=self.device) if worlds else None
        self._all = len(worlds) == self.batch

    def remove(self) -> None:
        """Take the hooks off the model (it then computes the base outputs for every world)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, a: Tensor, b: Tensor, scale: float):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor | None:
            idx = self._idx
            if idx is None:
                return None
            x = args[0]
            if x.shape[0] % self.batch:
                raise RuntimeError(f"batched memory: a targeted layer got {x.shape[0]} rows, not "
                                   f"world-major rows of {self.batch} worlds")
            xw = x.reshape(self.batch, -1, x.shape[-1])
            yw = out.reshape(self.batch, -1, out.shape[-1])
            if self._all:
                return (yw + lora_delta(xw, a, b, scale).to(out.dtype)).view(out.shape)
            delta = lora_delta(xw[idx], a[idx], b[idx], scale)
            return yw.index_add(0, idx, delta.to(out.dtype)).view(out.shape)

        return hook

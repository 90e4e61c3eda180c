"""A saved world: one world's whole episodic memory and where it stands, in one folder.

    folder/memory.json                what is in it: format, version, model, weights, stores, step
    folder/view_memory.safetensors    the view memory's map of that world (games.crafter.view_memory)
    folder/lora/                      its temporal LoRA, in peft's format (when that store is used)
    folder/world.safetensors          its rollout state: KV-cache rows, last frame, noise stream

`WorldSession.save_memory` / `load_memory` write and read it (and the window's F5 / F9,
`run_sim.py --resume-memory`, the service's /memory/save and /memory/load by name in its
`--saves` folder: memory.saves). A world loaded in a new process draws what the saved one would
have drawn next, and the remembered places when the player walks back to them.

A folder is written whole or not at all (memory.saves.replace_folder) and read whole before
anything changes: `read_manifest` checks every field's type, `read_world_state` the tensors'
names and kinds; the session then checks the shapes against its own model and only then applies
the save. `weights` is a fingerprint of the model's weights (`weights_fingerprint`): a save from
other weights of the same architecture is refused, and so is a save made before fingerprints
were written (it cannot be told apart from one).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from memory.lora import MemoryFileError
from memory.saves import MANIFEST_FORMAT
from worldmodel.data.episode import write_json_atomic

FORMAT = MANIFEST_FORMAT
VERSION = 1
MANIFEST = "memory.json"
WORLD_FILE = "world.safetensors"
LORA_DIR = "lora"
STORES = ("view", "lora")
MAX_MANIFEST = 1 << 20  # bytes: a manifest is a few hundred


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes and values, in name order), the
    first 16 hex digits: two checkpoints of one architecture tell apart."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def write_manifest(folder: Path, info: dict[str, Any]) -> None:
    write_json_atomic(folder / MANIFEST, {"format": FORMAT, "version": VERSION, **info})


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a saved world, every field checked; anything else is a MemoryFileError
    naming the problem."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise MemoryFileError(f"{folder} not found: no saved world memory there")
    if not path.exists():
        raise MemoryFileError(f"{path} not found: {folder} is not a saved world memory")
    if not path.is_file():
        raise MemoryFileError(f"{path} is corrupt: not a file")
    try:
        if path.stat().st_size > MAX_MANIFEST:
            raise MemoryFileError(f"{path} is corrupt: larger than {MAX_MANIFEST} bytes")
        info = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # bad UTF-8 or JSON, deep nesting
        raise MemoryFileError(f"{path} is corrupt: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        fmt = info.get("format") if isinstance(info, dict) else None
        raise MemoryFileError(f"{path} is not a world memory manifest (format {str(fmt)[:60]!r})")
    if not _is_int(info.get("version")) or info["version"] != VERSION:
        raise MemoryFileError(f"{path} is world-memory version {str(info.get('version'))[:20]}; "
                              f"this build reads version {VERSION}")
    check_manifest(info, path)
    return info


def check_manifest(info: dict[str, Any], path: Path) -> None:
    """Every field's type (a manifest edited by hand or damaged is refused, never half-read)."""
    def bad(what: str) -> MemoryFileError:
        return MemoryFileError(f"{path}: {what}")

    steps = info.get("steps")
    if not _is_int(steps) or not 0 <= steps < 2**63:
        raise bad(f"steps must be a whole number >= 0, got {str(steps)[:40]}"
                  + (" (not finite)" if isinstance(steps, float) and not math.isfinite(steps)
                     else ""))
    context = info.get("context")
    if not _is_int(context) or context < 1:
        raise bad(f"context must be a whole number >= 1, got {str(context)[:40]}")
    stores = info.get("stores")
    if (not isinstance(stores, list) or not all(isinstance(s, str) for s in stores)
            or len(set(stores)) != len(stores) or not set(stores) <= set(STORES)):
        raise bad(f"stores must be a list of distinct names among {list(STORES)}, got "
                  f"{str(stores)[:80]}")
    if not isinstance(info.get("model"), dict):
        raise bad("model must be the model config it was saved with")
    if "memory_on" in info and not isinstance(info["memory_on"], bool):
        raise bad("memory_on must be true or false")
    if info.get("checkpoint") is not None and not isinstance(info["checkpoint"], str):
        raise bad("checkpoint must be a string")
    weights = info.get("weights")
    if weights is None:
        raise bad("has no weights fingerprint (saved by an older build, before saves recorded "
                  "which weights made them): it cannot be checked against this model; save it "
                  "again with this build")
    if not isinstance(weights, str) or not weights or len(weights) > 64:
        raise bad(f"weights must be a fingerprint string, got {str(weights)[:40]}")
    folder = path.parent
    if "view" in stores and not (folder / "view_memory.safetensors").is_file():
        raise bad("lists a view memory store, but view_memory.safetensors is not there")
    if "lora" in stores and not (folder / LORA_DIR).is_dir():
        raise bad(f"lists a lora store, but {LORA_DIR}/ is not there")


def save_world_state(folder: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tmp = folder / f".{WORLD_FILE}.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
              metadata={"format": FORMAT, "version": str(VERSION)})
    tmp.replace(folder / WORLD_FILE)


def load_world_state(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of world.safetensors, with the names and kinds a world state has (last,
    last_clean: float; noise_state: uint8 bytes; clock: one int64; cache.<layer>.k / .v: float;
    stage.<key>: a stage's floats); their shapes
    are the rollout's to check (Rollout.check_world_state)."""
    from safetensors import safe_open

    path = folder / WORLD_FILE
    if not path.exists():
        raise MemoryFileError(f"{path} not found: the saved world is incomplete")
    if not path.is_file():
        raise MemoryFileError(f"{path} is corrupt: not a file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for a damaged file
        raise MemoryFileError(f"{path} is corrupt ({type(e).__name__}: {str(e)[:200]})") from None
    if meta.get("format") != FORMAT or meta.get("version") != str(VERSION):
        raise MemoryFileError(f"{path} is not a version-{VERSION} world state")
    for key in ("last", "last_clean", "noise_state"):
        if key not in state:
            raise MemoryFileError(f"{path} lacks {key}: the saved world is incomplete")
    for key, t in state.items():
        if key == "noise_state":
            if t.dtype != torch.uint8 or t.ndim != 1:
                raise MemoryFileError(f"{path}: noise_state must be a byte vector, got "
                                      f"{t.dtype} {tuple(t.shape)}")
        elif key == "clock":  # the world's episode step (absent in older saves)
            if t.dtype != torch.int64 or t.shape != (1,) or int(t[0]) < 0:
                raise MemoryFileError(f"{path}: clock must be one int64 step >= 0")
        elif key.startswith("stage.") and len(key) <= 64:  # a stage's own (Stage.check_saved)
            if not t.is_floating_point() or not torch.isfinite(t).all():
                raise MemoryFileError(f"{path}: {key} must be finite floats")
        elif key in ("last", "last_clean") or (key.startswith("cache.")
                                               and key.endswith((".k", ".v"))):
            if not t.is_floating_point():
                raise MemoryFileError(f"{path}: {key} must be floats, got {t.dtype}")
            if not torch.isfinite(t).all():
                raise MemoryFileError(f"{path}: {key} holds NaN or infinite values")
        else:
            raise MemoryFileError(f"{path}: unexpected tensor {key[:60]!r}")
    return state

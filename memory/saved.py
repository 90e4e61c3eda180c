"""A saved world: one world's whole episodic memory and where it stands, in one folder.

    folder/memory.json                what is in it: format, version, model, stores, step
    folder/view_memory.safetensors    the view memory's map of that world (memory.view)
    folder/lora/                      its temporal LoRA, in peft's format (when that store is used)
    folder/world.safetensors          its rollout state: KV-cache rows, last frame, noise stream

`WorldSession.save_memory` / `load_memory` write and read it (and the window's F5 / F9,
`run_sim.py --resume-memory`). A world loaded in a new process draws what the saved one would
have drawn next, and the remembered places when the player walks back to them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from memory.lora import MemoryFileError
from worldmodel.data.episode import write_json_atomic

FORMAT = "neural-game-simulator/world-memory"
VERSION = 1
MANIFEST = "memory.json"
WORLD_FILE = "world.safetensors"
LORA_DIR = "lora"


def write_manifest(folder: Path, info: dict[str, Any]) -> None:
    write_json_atomic(folder / MANIFEST, {"format": FORMAT, "version": VERSION, **info})


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a saved world; anything else is a MemoryFileError naming the problem."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise MemoryFileError(f"{folder} not found: no saved world memory there")
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise MemoryFileError(f"{path} not found: {folder} is not a saved world memory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MemoryFileError(f"{path} is corrupt: {e}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise MemoryFileError(f"{path} is not a world memory manifest (format "
                              f"{info.get('format') if isinstance(info, dict) else None!r})")
    if info.get("version") != VERSION:
        raise MemoryFileError(f"{path} is world-memory version {info.get('version')}; this build "
                              f"reads version {VERSION}")
    return info


def save_world_state(folder: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tmp = folder / f".{WORLD_FILE}.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
              metadata={"format": FORMAT, "version": str(VERSION)})
    tmp.replace(folder / WORLD_FILE)


def load_world_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / WORLD_FILE
    if not path.is_file():
        raise MemoryFileError(f"{path} not found: the saved world is incomplete")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise MemoryFileError(f"{path} is corrupt ({type(e).__name__}: {e})") from None

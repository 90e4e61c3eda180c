"""Small safetensors files with a format tag: written whole or not at all, read with one-line errors.

The project's side files (a tile codebook, a land prior, a saved view memory) are each a few
tensors plus string metadata naming their format and version. `write` replaces the file
atomically (a reader never sees half of one); `read` turns a missing or damaged file into the
caller's own error class, with the path in the message, so a bad file is never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def write(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, object]) -> Path:
    """Save `tensors` (moved to the CPU) with `meta` (values as strings) at `path`, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata={k: str(v) for k, v in meta.items()})
    os.replace(tmp, path)
    return path


def read(path: str | Path, error: type[Exception], what: str, missing: str = ""
         ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file `write` made. A file that is not there raises `error`
    ("<path> not found", then `missing`: how to make one); one safetensors cannot read raises
    `error` ("<path> is not a readable <what>: corrupt ...")."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise error(f"{path} not found" + (f" ({missing})" if missing else ""))
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for a damaged file
        raise error(f"{path} is not a readable {what}: corrupt or another kind of file "
                    f"({type(e).__name__}: {e})") from None
    return tensors, meta

"""A session's saved worlds (`WorldSession.save_memory`, `read_memory`, `load_memory`): one
world's whole episodic memory and where it stands, written to a folder whole or not at all and
read back only once all of it is checked against the session (memory.saved, memory.saves).

`SavedWorlds` is a part of `simulator.session.WorldSession` and works on its state: the model and
config, `batch`, `checkpoint`, `frame`, `frame_size`, `context_len`, `rollout_state`, `view`,
`_memory` and `_new_memory()`, `memory_config`, `memory_worlds`, `steps`, `world_steps`, `reset`.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from memory import saved
from memory.episodic import world_index
from memory.lora import MemoryFileError
from memory.saves import check_folder, replace_folder
from worldmodel.data.dataset import to_float, to_uint8


class SavedWorlds:
    """Saving and resuming one world of a `WorldSession` (see the module docstring)."""

    def _model_signature(self) -> dict:
        return dataclasses.asdict(self.cfg.model)

    @property
    def weights_fingerprint(self) -> str:
        """A fingerprint of the base model's weights (memory.saved.weights_fingerprint), kept in
        every save: a save from other weights is refused on load. Computed once."""
        if self._fingerprint is None:
            self._fingerprint = saved.weights_fingerprint(self.model)
        return self._fingerprint

    def save_memory(self, path: str | Path, world: int = 0) -> Path:
        """Write world `world` into folder `path` (memory.saved): its whole episodic memory
        (the view memory's map and poses, the temporal LoRA in peft's format) and where it
        stands (KV cache, last frame, noise stream, its step), so `load_memory` resumes it
        exactly. The folder is written whole or not at all (memory.saves.replace_folder): an
        earlier save there is replaced only once the new one is complete, a save that fails
        (a full disk, a folder it cannot write) leaves it as it was and raises MemoryFileError,
        and a folder holding anything but a saved world (or a symlink) is refused."""
        i = world_index(world, self.batch)
        if self.frame is None:
            raise RuntimeError("reset() the session before saving a world")
        folder = Path(path)
        stores = []

        def write(tmp: Path) -> None:
            if self.view is not None:
                self.view.save(tmp, i)
                stores.append("view")
            if self._memory is not None:
                self._memory.save(tmp / saved.LORA_DIR, i)
                stores.append("lora")
            saved.save_world_state(tmp, self.rollout_state.world_state(i))
            saved.write_manifest(tmp, {
                "checkpoint": self.checkpoint, "model": self._model_signature(),
                "weights": self.weights_fingerprint, "context": self.context_len,
                "stores": stores, "steps": int(self.world_steps[i]),
                "memory_on": self.memory_worlds[i]})

        try:
            return replace_folder(folder, write)
        except MemoryFileError:
            raise
        except (OSError, SafetensorError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise MemoryFileError(f"could not save the world memory to {folder}: "
                                  f"{type(e).__name__}: {why}") from None

    def read_memory(self, path: str | Path) -> dict:
        """Read and check a saved world whole against this session, changing nothing: the
        manifest, the world state, the view memory and the LoRA. Returns what `load_memory`
        applies; a MemoryFileError names the first thing wrong."""
        folder = check_folder(path)
        info = saved.read_manifest(folder)
        if info["model"] != self._model_signature():
            raise MemoryFileError(f"{folder} was saved with another model "
                                  f"({info.get('checkpoint')}); this session runs "
                                  f"{self.checkpoint}")
        if info["weights"] != self.weights_fingerprint:
            raise MemoryFileError(f"{folder} was saved with other weights: checkpoint "
                                  f"{info.get('checkpoint') or '(unnamed)'} (weights "
                                  f"{info['weights'][:16]}); this session runs "
                                  f"{self.checkpoint or '(unnamed)'} (weights "
                                  f"{self.weights_fingerprint})")
        if info["context"] != self.context_len:
            raise MemoryFileError(f"{folder} holds a {info['context']}-frame context; this "
                                  f"session keeps {self.context_len}")
        stores = info["stores"]
        if "view" in stores and self.view is None:
            raise MemoryFileError(f"{folder} holds a view memory and this session has none "
                                  f"(memory.stores is {self.memory_config.stores!r})")
        if "lora" in stores and not self._use_lora:
            raise MemoryFileError(f"{folder} holds a temporal LoRA and this session has none "
                                  f"(memory.stores is {self.memory_config.stores!r})")
        state = saved.load_world_state(folder)
        if self.frame is not None:
            try:
                self.rollout_state.check_world_state(state)
            except ValueError as e:
                raise MemoryFileError(f"{folder / saved.WORLD_FILE}: {e}") from None
        else:  # checked against a scratch rollout of this session's shapes once reset
            self._check_state_fresh(folder, state)
        view = self.view.read_saved(folder)[0] if "view" in stores else None
        lora = None
        memory = self._memory
        if "lora" in stores:
            if memory is None:  # a scratch adapter to check against; kept only if this loads
                memory = self._new_memory()
            try:
                lora = memory.read(folder / saved.LORA_DIR)[0]
            except MemoryFileError:
                if memory is not self._memory:
                    memory.close()
                raise
        return {"folder": folder, "info": info, "state": state, "view": view, "lora": lora,
                "memory": memory}

    def _check_state_fresh(self, folder: Path, state: dict) -> None:
        """A never-reset session has no cache to check a world state against: the shapes its
        last frames must have are the model's, the cache's are checked on a reset copy."""
        last = state["last_clean"]
        want = (1, 3, self.frame_size, self.frame_size)
        if last.shape != want or state["last"].shape != want:
            raise MemoryFileError(f"{folder / saved.WORLD_FILE}: last frames are "
                                  f"{tuple(state['last'].shape)} / {tuple(last.shape)}, this "
                                  f"model's {want}")
        probe = copy.copy(self.rollout_state)  # shares the model; own cache and frames
        probe.cache = type(self.rollout_state.cache)(max_len=self.rollout_state.cache.max_len,
                                                     window=self.rollout_state.cache.window)
        probe.view = None
        probe.gens = list(self.rollout_state.gens)
        frames = to_float(torch.from_numpy(np.ascontiguousarray(
            to_uint8(last[0]).cpu().numpy()[None, None].repeat(self.context_len, 1))))
        probe.reset(frames, None, [0])
        try:
            probe.check_world_state(state)
        except ValueError as e:
            raise MemoryFileError(f"{folder / saved.WORLD_FILE}: {e}") from None

    def load_memory(self, path: str | Path, world: int = 0) -> dict:
        """Resume a world saved by `save_memory` in world `world`: its memory, its place, its
        step and its noise stream, so it draws what the saved world would have drawn next. A
        session never reset starts every world there. The memory applies while that world's
        memory is on (`set_memory`). A missing, corrupt, foreign or version-mismatched folder
        is a MemoryFileError naming the problem, and changes nothing: the whole save is read
        and checked (`read_memory`) before any of it is applied. World `world`'s step becomes
        the saved one (`world_steps`); so does the session's `steps` with one world (a batch
        keeps counting its own)."""
        i = world_index(world, self.batch)
        got = self.read_memory(path)
        info, state = got["info"], got["state"]
        last = to_uint8(state["last_clean"][0]).cpu().numpy()  # (h, w, 3): the frame it shows
        if self.frame is None:  # start every world at the saved world's last frame
            self.reset(context=np.broadcast_to(last, (self.context_len, *last.shape)).copy())
        if got["view"] is not None:
            self.view.load_state(i, got["view"])
        elif self.view is not None:
            self.view.reset([i])
        if got["lora"] is not None:
            self._memory = got["memory"]
            self._memory.load_state(got["lora"], i)
        self.rollout_state.load_world_state(i, state)
        self.frame = self.frame.copy()
        self.frame[i] = last
        self.world_steps[i] = int(info["steps"])
        if self.batch == 1:
            self.steps = int(info["steps"])
        return info

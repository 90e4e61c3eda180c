"""Saved worlds (issue 24): a load checks everything before it changes anything, a save replaces
an earlier one whole or not at all, a save from other weights is refused, saves live under one
root by name."""

from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY_YAML, perturb_
from memory import saved
from memory.config import MemoryConfig
from memory.lora import MemoryFileError
from memory.saves import SaveRoot, SaveRootError, replace_folder
from saved_variants import VARIANTS, assert_same, corrupt_copy, snapshot
from simulator.session import WorldSession
from worldmodel.config import load_config
from worldmodel.dynamics import Denoiser

MCFG = dict(stores="both", rank=4, update_every=10**6, worker_nice=0)


def view_model(seed: int = 0):
    cfg = load_config(TINY_YAML, ["model.frame_size=64", "model.shift_kernel=17",
                                  "model.committed_move=7", "model.view_memory=true"])
    torch.manual_seed(seed)
    return perturb_(Denoiser(cfg.model), seed).eval(), cfg


def frames(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 64, 64, 3), np.uint8)


def make_session(seed: int = 0, checkpoint: str = "ckpt-a", batch: int = 2) -> WorldSession:
    model, cfg = view_model(seed)
    return WorldSession(model, cfg, batch=batch, checkpoint=checkpoint,
                        memory=MemoryConfig(**MCFG))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A world saved with both stores (view memory and LoRA) after 3 steps."""
    root = tmp_path_factory.mktemp("saved")
    sess = make_session()
    try:
        sess.reset(context=frames(sess.context_len, 0))
        sess.set_memory(True, 0)
        for a in (2, 2, 4):
            sess.step([a, a])
        sess.save_memory(root / "good", 0)
    finally:
        sess.close()
    return root / "good"


@pytest.fixture(scope="module")
def loader():
    """A batch of 2 that played 2 steps, memory never on (no LoRA store built)."""
    sess = make_session()
    sess.reset(context=frames(sess.context_len, 5))
    for a in (1, 3):
        sess.step([a, a])
    yield sess
    sess.close()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_corrupt_save_is_refused_and_changes_nothing(good, loader, tmp_path, variant):
    folder = corrupt_copy(good, tmp_path / "w", variant)
    before = snapshot(loader)
    with pytest.raises(MemoryFileError) as e:
        loader.load_memory(folder, world=1)
    assert "\n" not in str(e.value) and len(str(e.value)) < 700
    assert_same(before, snapshot(loader))
    assert loader._memory is None  # a failed load adds no LoRA store


def test_a_corrupt_lora_is_refused_and_adds_no_lora_store(good, loader, tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(good, folder)
    weights = folder / "lora" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    before = snapshot(loader)
    with pytest.raises(MemoryFileError, match="corrupt"):
        loader.load_memory(folder, world=1)
    assert_same(before, snapshot(loader))
    assert loader._memory is None
    loader.save_memory(tmp_path / "after", 0)  # so later saves carry no LoRA either
    assert json.loads((tmp_path / "after" / "memory.json").read_text())["stores"] == ["view"]


def test_the_good_save_loads_one_world_and_keeps_the_session_step(good, tmp_path):
    sess = make_session()
    try:
        sess.reset(context=frames(sess.context_len, 5))
        for a in (1, 3, 1, 1, 1):
            sess.step([a, a])
        before = snapshot(sess)
        info = sess.load_memory(good, world=1)
        assert info["steps"] == 3 and info["stores"] == ["view", "lora"]
        after = snapshot(sess)
        assert sess.steps == 5 and sess.world_steps == [5, 3]  # world 1 only
        assert not torch.equal(before["view"][0], after["view"][0])
        assert torch.equal(before["last"][0], after["last"][0])  # world 0 untouched
        assert not torch.equal(before["last"][1], after["last"][1])
        assert sess._memory is not None  # the save's LoRA came with it
    finally:
        sess.close()
    one = make_session(batch=1)
    try:
        one.load_memory(good)  # never reset: starts there
        assert one.steps == 3 and one.world_steps == [3]
    finally:
        one.close()


def test_a_save_from_other_weights_is_refused_naming_both_checkpoints(good, tmp_path):
    other = make_session(seed=1, checkpoint="ckpt-b")
    try:
        other.reset(context=frames(other.context_len, 1))
        before = snapshot(other)
        with pytest.raises(MemoryFileError, match="other weights") as e:
            other.load_memory(good)
        assert "ckpt-a" in str(e.value) and "ckpt-b" in str(e.value)
        assert_same(before, snapshot(other))
    finally:
        other.close()


def test_a_save_without_a_weights_fingerprint_is_refused(good, loader, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(good, folder)
    info = json.loads((folder / "memory.json").read_text())
    del info["weights"]
    (folder / "memory.json").write_text(json.dumps(info))
    with pytest.raises(MemoryFileError, match="no weights fingerprint"):
        loader.load_memory(folder, 1)


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("failure", ["enospc", "safetensors"])
def test_a_resave_that_fails_part_way_leaves_the_old_save_whole(loader, tmp_path, monkeypatch,
                                                                failure):
    from safetensors import SafetensorError

    folder = tmp_path / "w"
    loader.save_memory(folder, 0)
    old = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    loader.step([0, 0])

    def broken(*args, **kwargs):  # the view memory is written, then the disk fills up
        if failure == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(saved, "save_world_state", broken)
    with pytest.raises(MemoryFileError, match="could not save"):
        loader.save_memory(folder, 0)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == old
    assert leftovers(tmp_path) == []  # no temporary folder left behind
    monkeypatch.undo()
    with pytest.raises(MemoryFileError, match="could not save"):
        monkeypatch.setattr(saved, "save_world_state", broken)
        loader.save_memory(tmp_path / "new", 0)
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []


def test_a_resave_replaces_the_old_one_whole(loader, tmp_path):
    folder = tmp_path / "w"
    loader.save_memory(folder, 0)
    loader.step([0, 0])
    loader.save_memory(folder, 0)
    info = json.loads((folder / "memory.json").read_text())
    assert info["steps"] == loader.world_steps[0] and leftovers(tmp_path) == []


def test_a_folder_that_is_not_a_save_is_never_replaced(loader, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "memory.json").write_text('{"my": "notes"}')
    with pytest.raises(MemoryFileError, match="other than a saved world"):
        loader.save_memory(folder, 0)
    assert (folder / "memory.json").read_text() == '{"my": "notes"}'
    (folder / "memory.json").unlink()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(MemoryFileError, match="other than a saved world"):
        loader.save_memory(folder, 0)
    assert sorted(os.listdir(folder)) == ["notes.txt"]


def test_saves_are_names_in_one_root_and_symlinks_are_refused(tmp_path):
    root = SaveRoot(tmp_path / "saves")
    assert root.folder("world-1_a") == tmp_path / "saves" / "world-1_a"
    for name in ["..", "../x", "/etc", "a/b", "a\\b", "", ".hidden", "x" * 65, "é", 3, None,
                 "a\x00b"]:
        with pytest.raises(SaveRootError, match="save name"):
            root.folder(name)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "saves" / "link")
    with pytest.raises(SaveRootError, match="symlink"):
        root.folder("link")
    os.symlink(tmp_path / "saves", tmp_path / "rootlink")
    with pytest.raises(SaveRootError, match="symlink"):
        SaveRoot(tmp_path / "rootlink")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SaveRootError, match="not a folder"):
        SaveRoot(tmp_path / "file")
    with pytest.raises(SaveRootError, match="symlink"):
        replace_folder(tmp_path / "saves" / "link", lambda tmp: None)
    assert list(outside.iterdir()) == []
    assert root.names() == []

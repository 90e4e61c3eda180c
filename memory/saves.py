"""Where saved worlds live: one root folder, saves in it by name, each replaced whole or not at all.

    root = SaveRoot("saves")          # made if missing; a symlink or a file is refused
    folder = root.folder("castle-1")  # saves/castle-1 (a name, never a path)
    replace_folder(folder, write)     # write(tmp) fills a new folder beside it; then it replaces
                                      # the old one in one rename, and only then is the old removed

A name is 1 to 64 of `A-Z a-z 0-9 _ -` (`NAME`): no separator, no `..`, nothing absolute, so a
name can only ever mean a folder directly inside the root. A save folder that is a symlink (or a
root that is one) is refused, so nothing outside the root is ever written or read through it; the
service (`run_sim.py serve --saves DIR`) takes names only. The window's `--memory-dir` and
`--resume-memory` are paths the person at the keyboard typed: the same symlink rule and the same
whole-or-nothing replacement apply to them (`check_folder`, `replace_folder`).

`replace_folder` writes the new save into a hidden temporary folder beside the old one
(`.NAME.tmp-*`), fsyncs every file and the folder, renames the old one aside (`.NAME.old-*`),
renames the new one into place, fsyncs the parent and only then deletes the old one. A save that
fails part-way (a full disk, a folder it cannot write) removes its temporary folder and leaves the
old save exactly as it was. A folder that holds anything but a saved world is never replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from memory.lora import MemoryFileError

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# What a saved world folder holds (memory.saved): anything else in a folder means it is not one.
SAVE_ENTRIES = {"memory.json", "world.safetensors", "view_memory.safetensors", "lora"}
MANIFEST_FORMAT = "neural-game-simulator/world-memory"


class SaveRootError(MemoryFileError):
    """A save name or folder that is refused (not a name, a symlink, not a saved world)."""


def quote(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters (names come from requests)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_name(name: object) -> str:
    """A save name, or a SaveRootError saying what a name may be."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise SaveRootError(f"a save name is 1 to 64 letters, digits, '_' or '-' (no path), "
                            f"got {quote(name)}")
    return name


def _refuse_link_or_file(path: Path, what: object) -> None:
    """SaveRootError (naming `what`) if `path` is a symlink, or exists and is not a folder."""
    if path.is_symlink():
        raise SaveRootError(f"{what} is a symlink: saved worlds are not read or written "
                            f"through symlinks")
    if path.exists() and not path.is_dir():
        raise SaveRootError(f"{what} is not a folder")


def check_folder(folder: str | Path) -> Path:
    """`folder` as an absolute path, refused (SaveRootError) if it or the folder it lies in is a
    symlink, or it exists and is not a folder."""
    path = Path(os.path.abspath(folder))
    _refuse_link_or_file(path, path)
    if path.parent.is_symlink():
        raise SaveRootError(f"{path.parent} is a symlink: saved worlds are not read or written "
                            f"through symlinks")
    return path


class SaveRoot:
    """The one folder saves live in (see module docstring)."""

    def __init__(self, root: str | Path, create: bool = True):
        path = Path(os.path.abspath(root))
        if path.is_symlink():
            raise SaveRootError(f"the saves folder {path} is a symlink: give the real folder")
        if create and not path.exists():
            try:
                path.mkdir(parents=True)
            except OSError as e:
                raise SaveRootError(f"cannot make the saves folder {path}: {e.strerror}") from None
        if not path.is_dir():
            raise SaveRootError(f"the saves folder {path} is not a folder")
        self.root = path

    def folder(self, name: object) -> Path:
        """The folder of save `name` (which need not exist yet); never outside the root."""
        p = self.root / check_name(name)
        if self.root.is_symlink():  # swapped for a link since start-up
            raise SaveRootError(f"the saves folder {self.root} became a symlink")
        _refuse_link_or_file(p, f"save {name}")
        return p

    def names(self) -> list[str]:
        """The saves in the root (folders with a valid name, symlinks left out)."""
        return sorted(p.name for p in self.root.iterdir()
                      if NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink())


def is_saved_world(folder: Path) -> bool:
    """True for an empty folder or one that holds only a saved world's files, its manifest
    tagged with the format (so a person's own folder is never taken for one and replaced)."""
    entries = {p.name for p in folder.iterdir()}
    if not entries:
        return True
    if not entries <= SAVE_ENTRIES or "memory.json" not in entries:
        return False
    try:
        info = json.loads((folder / "memory.json").read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(info, dict) and info.get("format") == MANIFEST_FORMAT


def _fsync_tree(folder: Path) -> None:
    """Every file under `folder`, then every folder, forced to disk."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for dirpath, _, _ in os.walk(folder):
        _fsync_dir(Path(dirpath))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_folder(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Make `target` the folder `write(tmp)` fills, whole or not at all (module docstring).
    Raises SaveRootError for a target that is not a saved world (or empty), and whatever `write`
    or the disk raises after the temporary folder is removed."""
    target = check_folder(target)
    if target.exists() and not is_saved_world(target):
        raise SaveRootError(f"{target} holds files other than a saved world: not replaced "
                            f"(remove them or save elsewhere)")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    old: Path | None = None
    try:
        write(tmp)
        _fsync_tree(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.rename(target, old / "save")
        os.rename(tmp, target)
        _fsync_dir(parent)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        if old is not None and (old / "save").exists() and not target.exists():
            with contextlib.suppress(OSError):
                os.rename(old / "save", target)  # the old save back where it was
        if old is not None:
            with contextlib.suppress(OSError):
                if not (old / "save").exists():
                    old.rmdir()
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # only now that the new one is in place
    return target

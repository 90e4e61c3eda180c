"""What every command line shares: bad input is one clear line and exit status 2, not a
traceback (bugs still get one), and the common flags (`common_flags`) mean one thing everywhere."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from worldmodel.actions import ActionError
from worldmodel.checkpoint import CheckpointError
from worldmodel.config import ConfigError
from worldmodel.data.episode import EpisodeError
from worldmodel.game import GameError, MemoryFileError

# A game's own errors of bad input subclass GameError (a tile bank, a codebook, a land prior...).
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, CheckpointError, EpisodeError, ActionError,
                                            GameError, MemoryFileError, OSError)


def run_cli(main: Callable[[], object], extra: tuple[type[Exception], ...] = ()) -> None:
    """Run a command's `main`; bad input (a config key, a checkpoint, an episode, an action, a
    game's file, a saved memory) or a failing disk prints `error: ...` and exits with status 2."""
    try:
        main()
    except USER_ERRORS + extra as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


# The flags many commands take, each meaning one thing: a command names the ones it takes
# (`common_flags(checkpoint={"required": True}, seed=True)`) and may change a default or help.
FLAGS: dict[str, dict[str, Any]] = {
    "checkpoint": {"help": "checkpoint folder (model.safetensors + config.json)"},
    "out": {"help": "where to write the command's output"},
    "device": {"help": "cpu, cuda, cuda:1 (default: cuda if available)"},
    "seed": {"type": int, "default": 0, "help": "random seed (default 0)"},
    "threads": {"type": int, "default": 0, "help": "torch CPU threads (0 = torch's default)"},
}


def common_flags(**flags: dict[str, Any] | bool) -> argparse.ArgumentParser:
    """A parent parser (argparse's `parents=[...]`) with the shared flags named, each with
    FLAGS' meaning and the overrides given (`out={"default": "runs/eval"}`)."""
    p = argparse.ArgumentParser(add_help=False)
    for name, over in flags.items():
        if name not in FLAGS:
            raise KeyError(f"no shared flag --{name}; shared: {sorted(FLAGS)}")
        p.add_argument(f"--{name}", **{**FLAGS[name], **(over if isinstance(over, dict) else {})})
    return p


def side_file_flags(what: str, name: str, key: str) -> dict[str, dict[str, str]]:
    """`common_flags` overrides of a command that builds a checkpoint's side file: `--out FILE`
    and/or `--checkpoint DIR` (written there as `name`, named by `game.<key>`)."""
    return {"out": {"help": f"{what} file (.safetensors)"},
            "checkpoint": {"help": f"attach it to this checkpoint: written there as {name} and "
                                   f"named in its config (game.{key})"}}

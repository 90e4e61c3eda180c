"""Entry points report bad input as one clear line, not a traceback (bugs still get one)."""

from __future__ import annotations

import sys
from typing import Callable

from worldmodel.actions import ActionError
from worldmodel.checkpoint import CheckpointError
from worldmodel.config import ConfigError
from worldmodel.data.episode import EpisodeError
from worldmodel.game import GameError

# A game's own errors of bad input subclass GameError (a tile bank, a codebook, a land prior...).
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, CheckpointError, EpisodeError, ActionError,
                                            GameError, FileNotFoundError)


def run_cli(main: Callable[[], object], extra: tuple[type[Exception], ...] = ()) -> None:
    """Run a command's `main`; bad input (a config key, a checkpoint, an episode, an action)
    prints `error: ...` and exits with status 2."""
    try:
        main()
    except USER_ERRORS + extra as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)

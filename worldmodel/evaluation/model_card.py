"""The model card of a checkpoint, and the README's results block, from its reports:

    python -m worldmodel.evaluation.model_card --checkpoint DIR [--readme README.md] [...]

What a card says is the game's (`Game.model_card`: Crafter's reads its semantic evaluation,
revisits, speed and levers); this entry point finds the checkpoint's game and hands it the
arguments.
"""

from __future__ import annotations

import argparse

from worldmodel.checkpoint import load_config_from_checkpoint
from worldmodel.cli import run_cli
from worldmodel.game import GameError, get_game


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, add_help=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    known, _ = p.parse_known_args(argv)
    cfg = load_config_from_checkpoint(known.checkpoint)
    game = get_game(cfg.model.game_name)
    if not hasattr(game, "model_card"):
        raise GameError(f"game {game.name!r} writes no model card")
    return game.model_card(argv)


if __name__ == "__main__":
    run_cli(main)

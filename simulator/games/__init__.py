"""The real games, through the core's registry (`worldmodel.game`): `make_game(name)` starts one."""

from worldmodel.game import GameError, get_game, known_games


def make_game(name: str, **kwargs):
    """A running real environment of game `name` (a `worldmodel.game.RealEnv`)."""
    return get_game(name).make_env(**kwargs)


__all__ = ["GameError", "known_games", "make_game"]

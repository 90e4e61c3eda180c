"""Crafter (top-down 2D) behind the core's Game seam: `games.crafter.game.GAME` (registered when
that module loads; the `neural_game_sim.games` entry point names it). The package imports nothing
itself, so each of its modules runs as a command (`python -m games.crafter.codebook`)."""

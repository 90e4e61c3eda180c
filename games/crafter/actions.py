"""Crafter's 17 actions (crafter 1.8's order), registered with the core as the "crafter" space."""

from worldmodel.actions import DiscreteActionSpace, register_action_space

CRAFTER_ACTIONS = (
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
    "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
    "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword",
)
ACTION_SPACE = register_action_space(DiscreteActionSpace("crafter", CRAFTER_ACTIONS))

"""Minetest's discrete actions, registered with the core as the "minetest" space.

One action is one step of the driver mod (`mod/ngs_driver`): a move is half a node (climbing one
node where the way is blocked by a single node and open above it, as Minecraft's auto-jump); a
turn or tilt is 15 degrees (tilt within +-90); a jump lifts the player one node (gravity, one
node a step, pulls it back unless a move lands it on something); dig removes the node the eye
points at within 5 nodes (not water); place puts a wooden-planks node on the pointed face.
"""

from worldmodel.actions import DiscreteActionSpace, register_action_space

MINETEST_ACTIONS = (
    "noop", "forward", "back", "left", "right", "turn_left", "turn_right", "look_up", "look_down",
    "jump", "dig", "place",
)
ACTION_SPACE = register_action_space(DiscreteActionSpace("minetest", MINETEST_ACTIONS))

# The window's keys (pygame key names): WASD walk and strafe, the arrows (or Q/E) turn and tilt,
# space jumps, F or the left mouse button digs, R or the right one places.
KEYS: dict[str, str] = {
    "w": "forward", "s": "back", "a": "left", "d": "right",
    "left": "turn_left", "right": "turn_right", "q": "turn_left", "e": "turn_right",
    "up": "look_up", "down": "look_down",
    "space": "jump", "f": "dig", "r": "place", "mouse left": "dig", "mouse right": "place",
}

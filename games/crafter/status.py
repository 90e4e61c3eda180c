"""The status and inventory rows in imagination: drawn by the game's own rules and textures.

    python -m games.crafter.status --checkpoint assets/crafter_memory --worlds 8 --steps 600 \\
        --long 2000 --out assets/crafter_memory/eval/status.json

Below Crafter's world view the real game draws 16 slots of 7x7 px (`engine.ItemView`, a 9x2
grid: health, food, drink, energy, then sapling, wood, stone, coal, iron, diamond and the six
tools), each its item's icon and a digit 1-9, or nothing at 0. These values are not pixels the
model can carry by look: they follow counters the frame never shows (hunger, thirst, fatigue,
recovery) and what the player collected, placed and made. A denoiser left to draw them smears the
icons and holds the digits near 9.

`StatusStage` (the checkpoint's `game.status`, after the codebook snap) keeps each world's player
state as the game does (`crafter.objects.Player.update`, rule for rule, from crafter's own tables
`constants.collect/place/make`), reads what the player acted on from the snapped frames' cell
labels, and draws the rows from the game's textures, so every icon and digit is one the game
draws and the context and the memory see them too. Per frame and world:

- the action, on the cell the player faces in the frame before (the facing follows the moves):
  `do` on a tree, stone, coal, iron, diamond (with the pickaxe each needs), water (drink, thirst
  reset), grass (a sapling one time in ten, drawn from (seed, world, step)) or a cow (its health
  3, the sword's damage; eaten: food + 6); `place_*` and `make_*` with crafter's `uses`, `where`
  and `nearby` (the 3x3 cells around the player); `sleep` below full energy;
- the life counters (hunger, thirst, fatigue) and the health's recovery or decay, then the clamp
  to 0..9 and waking when hurt;
- a zombie next to the player in the new frame hits (2, or 7 asleep) with the game's cooldown of 5.

A world's state starts from the real frame it is reset from: the values read from its rows (each
slot the nearest of its ten cells), the facing from the player's sprite, and the counters from
the clock as a player who never slept nor ate would have them. Not handled, and said so: arrows,
eating a ripe plant; an arrow's hit is read from its vanishing next to the player.
The state is saved with the world (`stage.status`) and resumes with it.

The measurement plays the real game from held-out seeds under the exploration policy, rolls the
model from the real context under the same actions (memory on), with and without the stage, and
reports the share of the 18 bottom-row cells unlike any cell the game draws there, the share equal
to the real game's cell at the same step after step 100, and per value the share of runs whose
value at the end is within 1 of the real game's; `--long` adds one world's rollout of that many
frames for the unlike-any share.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from games.crafter.actions import ACTION_SPACE
from games.crafter.env import LABEL_NAMES
from worldmodel.pipeline import Stage

UNIT = 7
TOP = 49  # the first pixel row of the status row (the world view is 7 cells of 7 px above)
GRID = (9, 2)  # ItemView's slots: 9 per row, 2 rows
CELLS = GRID[0] * GRID[1]  # 18 cells, 16 slots and two always empty
ROWS = (TOP, TOP + GRID[1] * UNIT, 0, GRID[0] * UNIT)  # (y0, y1, x0, x1) in frame pixels
PLAYER = (3, 4)  # the player's cell in the world view's labels (row, col)
LABEL = {name: i for i, name in enumerate(LABEL_NAMES)}
OBJECTS = {LABEL[n] for n in ("player", "cow", "zombie", "skeleton", "arrow", "plant")}
FACINGS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (dx, dy): left, right, up, down
SPRITES = ("player-left", "player-right", "player-up", "player-down")
WALKABLE = ("grass", "sand", "path")  # crafter's constants.walkable (the player also walks on lava)
MOVES = {"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1), "move_down": (0, 1)}
SAPLING = 0.1  # crafter's probability of a sapling from grass (constants.collect)
# The state vector: the 16 values, then the counters.
HUNGER, THIRST, FATIGUE, RECOVER, SLEEPING, LAST_HEALTH, FX, FY, COOLDOWN, COW_DAMAGE = range(16, 26)
STATE = 26


class StatusError(ValueError):
    """A status state that cannot be used."""


@functools.lru_cache(1)
def game_tables() -> tuple[list[str], dict, dict, dict, dict]:
    """crafter's own item names (in HUD order) and collect/place/make tables."""
    from crafter import constants

    return (list(constants.items), constants.items, constants.collect, constants.place,
            constants.make)


@functools.lru_cache(1)
def _textures() -> Any:
    from crafter import constants, engine

    return engine.Textures(constants.root / "assets")


def item_view(inventory: dict[str, int]) -> np.ndarray:
    """(14, 63, 3) uint8: the game's own drawing of the two rows for `inventory` (its ItemView,
    as `crafter.Env.render` draws it at 64 px, in (y, x) order)."""
    from crafter import engine

    names = game_tables()[0]
    canvas = engine.ItemView(_textures(), list(GRID))({n: int(inventory.get(n, 0)) for n in names},
                                                     [UNIT, UNIT])
    return canvas.transpose(1, 0, 2)


@functools.lru_cache(1)
def slot_cells() -> np.ndarray:
    """(16, 10, 7, 7, 3) uint8: every slot's cell at every amount 0..9, as the game draws it."""
    names = game_tables()[0]
    out = np.zeros((len(names), 10, UNIT, UNIT, 3), np.uint8)
    for s, name in enumerate(names):
        r, c = divmod(s, GRID[0])
        for a in range(1, 10):
            out[s, a] = item_view({name: a})[r * UNIT:(r + 1) * UNIT, c * UNIT:(c + 1) * UNIT]
    return out


def draw_rows(values: np.ndarray) -> np.ndarray:
    """(14, 63, 3) uint8 the rows for the 16 values (each 0..9), composed from `slot_cells`."""
    cells = slot_cells()
    rows = np.zeros((GRID[1] * UNIT, GRID[0] * UNIT, 3), np.uint8)
    for s, a in enumerate(np.asarray(values, np.int64)[:len(cells)]):
        r, c = divmod(s, GRID[0])
        rows[r * UNIT:(r + 1) * UNIT, c * UNIT:(c + 1) * UNIT] = cells[s, int(a)]
    return rows


def frame_cells(frames: np.ndarray) -> np.ndarray:
    """(..., 18, 7, 7, 3) the bottom-row cells of uint8 frames (..., 64, 64, 3)."""
    y0, y1, x0, x1 = ROWS
    v = frames[..., y0:y1, x0:x1, :]
    lead = v.shape[:-3]
    v = v.reshape(*lead, GRID[1], UNIT, GRID[0], UNIT, 3)
    v = np.moveaxis(v, -4, -3)  # (..., 2, 9, 7, 7, 3)
    return v.reshape(*lead, CELLS, UNIT, UNIT, 3)


@functools.lru_cache(1)
def _cell_candidates() -> np.ndarray:
    """(18, 10, 147) int16: per cell the cells the game can draw there (an empty cell: black)."""
    cells = slot_cells().reshape(len(slot_cells()), 10, -1).astype(np.int16)
    empty = np.zeros((CELLS - len(cells), 10, cells.shape[-1]), np.int16)
    return np.concatenate([cells, empty])


def read_values(frames: np.ndarray) -> np.ndarray:
    """(..., 16) int the values shown in uint8 frames (..., 64, 64, 3): per slot, the amount whose
    cell is nearest (squared pixel distance)."""
    cand = _cell_candidates()[:len(slot_cells())]
    got = frame_cells(frames)[..., :len(cand), :, :, :]
    got = got.reshape(*got.shape[:-3], -1).astype(np.int32)
    d = ((got[..., None, :] - cand) ** 2).sum(-1)  # (..., 16, 10)
    return d.argmin(-1)


def cell_report(frames: np.ndarray, tol: int = 24) -> np.ndarray:
    """(..., 18) bool: each bottom-row cell is one the game draws there (every pixel within `tol`
    grey levels of one of its candidates: a uint8 round trip is exact, a smear is not)."""
    got = frame_cells(frames).reshape(*frames.shape[:-3], CELLS, -1).astype(np.int16)
    d = np.abs(got[..., None, :] - _cell_candidates()).max(-1)  # (..., 18, 10)
    return (d <= tol).any(-1)


def read_facing(frame: np.ndarray) -> tuple[int, int]:
    """The player's facing (dx, dy) read from its sprite in a uint8 frame (64, 64, 3): the nearest
    of the four sprites over the grounds it walks on (grass, sand, path)."""
    from crafter import engine

    r, c = PLAYER
    tile = frame[r * UNIT:(r + 1) * UNIT, c * UNIT:(c + 1) * UNIT].astype(np.float32)
    best, out = np.inf, (0, 1)
    for facing, sprite in zip(FACINGS, SPRITES):
        for ground in ("grass", "sand", "path"):
            canvas = _textures().get(ground, (UNIT, UNIT))[..., :3].copy()
            engine._draw_alpha(canvas, (0, 0), _textures().get(sprite, (UNIT, UNIT)))
            d = float(((canvas.transpose(1, 0, 2).astype(np.float32) - tile) ** 2).sum())
            if d < best:
                best, out = d, facing
    return out


def initial_state(frame: np.ndarray, clock: int) -> np.ndarray:
    """(STATE,) float64 a world's player state from a real uint8 frame (64, 64, 3) at episode step
    `clock`: the shown values, the sprite's facing, the counters of a player who never slept nor
    ate (each counter's cycle: hunger 26 steps, thirst 21, fatigue 31, recovery 26)."""
    s = np.zeros(STATE, np.float64)
    s[:16] = read_values(frame)
    k = max(0, int(clock))
    s[HUNGER], s[THIRST], s[FATIGUE], s[RECOVER] = k % 26, k % 21, k % 31, k % 26
    s[LAST_HEALTH] = s[0]
    s[FX], s[FY] = read_facing(frame)
    return s


def update(s: np.ndarray, action: str, before: np.ndarray, after: np.ndarray, u: float) -> np.ndarray:
    """One step of the game's player rules (crafter.objects.Player.update, then a neighbouring
    zombie's hit) on state `s`: `before`/`after` the world view's labels (7, 9) of the frame the
    step starts from and of the one it makes; `u` in [0, 1) the step's uniform draw (the sapling).
    Returns the new state."""
    names, items, collect, place, make = game_tables()
    s = s.copy()
    inv = {n: int(s[i]) for i, n in enumerate(names)}
    sleeping = bool(s[SLEEPING])
    fx, fy = int(s[FX]), int(s[FY])
    r, c = PLAYER
    target = int(before[r + fy, c + fx])
    material = LABEL_NAMES[target]
    if sleeping:
        if inv["energy"] < items["energy"]["max"]:
            action = "sleep"
        else:
            sleeping = False
    moved = (0, 0)
    if action in MOVES:
        fx, fy = MOVES[action]
        ahead = int(before[r + fy, c + fx])
        if ahead not in OBJECTS and LABEL_NAMES[ahead] in WALKABLE + ("lava",):
            moved = (fx, fy)
            if LABEL_NAMES[ahead] == "lava":
                inv["health"] = 0
    elif action == "do" and target in OBJECTS:
        if target == LABEL["cow"]:
            damage = max(1, inv["wood_sword"] and 2, inv["stone_sword"] and 3, inv["iron_sword"] and 5)
            s[COW_DAMAGE] += damage
            if s[COW_DAMAGE] >= 3:
                s[COW_DAMAGE] = 0
                inv["food"] += 6
                s[HUNGER] = 0
    elif action == "do":
        if material == "water":
            s[THIRST] = 0
        info = collect.get(material)
        if info and all(inv[n] >= a for n, a in info["require"].items()):
            if u <= info.get("probability", 1):
                for n, a in info["receive"].items():
                    inv[n] += a
    elif action == "sleep":
        if inv["energy"] < items["energy"]["max"]:
            sleeping = True
    elif action.startswith("place_"):
        info = place[action[len("place_"):]]
        if (target not in OBJECTS and material in info["where"]
                and all(inv[k] >= v for k, v in info["uses"].items())):
            for k, v in info["uses"].items():
                inv[k] -= v
    elif action.startswith("make_"):
        name = action[len("make_"):]
        info = make[name]
        nearby = {LABEL_NAMES[int(v)] for v in before[r - 1:r + 2, c - 1:c + 2].ravel()}
        if (all(n in nearby for n in info["nearby"])
                and all(inv[k] >= v for k, v in info["uses"].items())):
            for k, v in info["uses"].items():
                inv[k] -= v
            inv[name] += info["gives"]
    if action != "do" or target != LABEL["cow"]:
        s[COW_DAMAGE] = 0  # another cow, or none: a new one has its full health
    # _update_life_stats
    s[HUNGER] += 0.5 if sleeping else 1
    if s[HUNGER] > 25:
        s[HUNGER] = 0
        inv["food"] -= 1
    s[THIRST] += 0.5 if sleeping else 1
    if s[THIRST] > 20:
        s[THIRST] = 0
        inv["drink"] -= 1
    s[FATIGUE] = min(s[FATIGUE] - 1, 0) if sleeping else s[FATIGUE] + 1
    if s[FATIGUE] < -10:
        s[FATIGUE] = 0
        inv["energy"] += 1
    if s[FATIGUE] > 30:
        s[FATIGUE] = 0
        inv["energy"] -= 1
    # _degen_or_regen_health
    if inv["food"] > 0 and inv["drink"] > 0 and (inv["energy"] > 0 or sleeping):
        s[RECOVER] += 2 if sleeping else 1
    else:
        s[RECOVER] -= 0.5 if sleeping else 1
    if s[RECOVER] > 25:
        s[RECOVER] = 0
        inv["health"] += 1
    if s[RECOVER] < -15:
        s[RECOVER] = 0
        inv["health"] -= 1
    for n in names:
        inv[n] = max(0, min(inv[n], items[n]["max"]))
    if inv["health"] < s[LAST_HEALTH]:  # _wake_up_when_hurt
        sleeping = False
    s[LAST_HEALTH] = inv["health"]
    # a zombie next to the player (the zombie updates after the player)
    near = after[r - 1:r + 2, c - 1:c + 2].astype(np.int64)
    near[0, 0] = near[0, 2] = near[2, 0] = near[2, 2] = -1  # Manhattan distance <= 1
    if (near == LABEL["zombie"]).any():
        if s[COOLDOWN] > 0:
            s[COOLDOWN] -= 1
        else:
            inv["health"] = max(0, inv["health"] - (7 if sleeping else 2))
            s[COOLDOWN] = 5
    # an arrow next to where the player now stands flies into it (arrows update after the player):
    # it was there before and is nowhere it could have flown on to
    pr, pc = r + moved[1], c + moved[0]
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        if before[pr + dr, pc + dc] != LABEL["arrow"]:
            continue
        qr, qc = r + dr, c + dc  # the same cell in `after`'s cells
        onward = [after[qr + a, qc + b] for a, b in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
                  if (qr + a, qc + b) != (r, c)]
        if LABEL["arrow"] not in onward:
            inv["health"] = max(0, inv["health"] - 2)
    for i, n in enumerate(names):
        s[i] = inv[n]
    s[SLEEPING], s[FX], s[FY] = float(sleeping), fx, fy
    return s


def check_state(t: Tensor) -> None:
    """StatusError unless `t` is a saved status state."""
    if t.dtype != torch.float64 or t.shape != (STATE,):
        raise StatusError(f"a status state is {STATE} float64 values, got {t.dtype} {tuple(t.shape)}")
    v = t.numpy()
    if not np.isfinite(v).all() or (v[:16] < 0).any() or (v[:16] > 9).any():
        raise StatusError("a status state's values are 0..9")
    if (int(v[FX]), int(v[FY])) not in FACINGS:
        raise StatusError("a status state's facing is one of the four directions")


class StatusStage(Stage):
    """After the codebook snap: the status and inventory rows drawn from each world's player
    state, kept by the game's rules (see module docstring). Needs a codebook with labels."""

    name = "status rows"
    key = "status"  # its per-world state: Rollout.world_stage[w]["status"], saved as stage.status

    def __init__(self, book: Any):
        self.book = book
        self._rows = {}

    def _labels(self, ro: Any, frame: Any) -> tuple[Tensor, Tensor]:
        """(b, 7, 9) the labels of the frame the chunk starts from, (b, n, 7, 9) of its frames."""
        before = ro.stage_state.get("status_labels")
        if before is None:
            _, before, _ = self.book.snap(ro.last_clean[:, 0], return_labels=True)
        now = frame.state.get("frame_labels")
        if now is None:
            _, now, _ = self.book.snap(frame.frames, return_labels=True)
        return before, now

    def _state(self, ro: Any, w: int) -> np.ndarray:
        st = ro.world_stage[w].get(self.key)
        if st is None:
            from worldmodel.data.dataset import to_uint8

            frame = to_uint8(ro.last_clean[w, 0]).cpu().numpy()
            st = torch.from_numpy(initial_state(frame, ro.clock[w]))
        return st.numpy()

    def _draw(self, values: np.ndarray) -> Tensor:
        key = tuple(int(v) for v in values[:16])
        rows = self._rows.get(key)
        if rows is None:
            if len(self._rows) > 4096:
                self._rows.clear()
            rows = torch.from_numpy(draw_rows(values)).permute(2, 0, 1).float() / 127.5 - 1
            self._rows[key] = rows
        return rows

    def after(self, ro: Any, frame: Any) -> None:
        before_t, now_t = self._labels(ro, frame)
        before, now = before_t.cpu().numpy(), now_t.cpu().numpy()
        acts = frame.actions.cpu().numpy()
        b, n = acts.shape[:2]
        y0, y1, x0, x1 = ROWS
        out = frame.frames.clone()
        for w in range(b):
            s = self._state(ro, w)
            prev = before[w]
            for i in range(n):
                a = int(acts[w, i])
                name = ACTION_SPACE.actions[a] if 0 <= a < len(ACTION_SPACE.actions) else "noop"
                step = ro.clock[w] + i + 1
                u = float(np.random.default_rng([ro.seed, w, step]).random())
                s = update(s, name, prev, now[w, i], u)
                prev = now[w, i]
                out[w, i, :, y0:y1, x0:x1] = self._draw(s).to(out)
            ro.world_stage[w][self.key] = torch.from_numpy(s)
        frame.frames = out
        frame.state["status_labels"] = now_t[:, -1]

    def check_saved(self, t: Tensor) -> None:
        check_state(t)


# ---- measurement ----------------------------------------------------------------------------

def real_runs(seeds: list[int], steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """The real game from `seeds` under the exploration policy: frames (W, steps, 64, 64, 3),
    actions (W, steps) (the first is no action), the view's labels (W, steps, 7, 9) and each
    world's final inventory (the measurements of the status rows, the creatures and the night)."""
    from games.crafter.env import CrafterEnv
    from games.crafter.policies import exploration_policy

    frames, acts, labels, final = [], [], [], []
    for seed in seeds:
        env = CrafterEnv()
        obs, lab = [env.reset(seed)], [env.view_labels()]
        a = [0] + list(exploration_policy(seed, steps - 1))[:steps - 1]
        info = {}
        for act in a[1:]:
            r = env.step(act)
            obs.append(r.obs)
            lab.append(env.view_labels())
            info = r.info
        frames.append(np.stack(obs))
        acts.append(np.asarray(a))
        labels.append(np.stack(lab))
        final.append(info.get("inventory", {}))
    return np.stack(frames), np.stack(acts), np.stack(labels), final


def imagine(model: Any, cfg: Any, real: np.ndarray, acts: np.ndarray, stages: list) -> np.ndarray:
    """The model's frames (W, steps - context, 64, 64, 3) from each real context under the real
    actions, memory on, with `stages` (`diffusion.sampler = progressive`: `Rollout.stream`)."""
    from worldmodel.data.dataset import to_float, to_uint8
    from worldmodel.recall import has_view_memory, make_view_memory
    from worldmodel.rollout import Rollout

    model.stages = list(stages)
    ro = Rollout(model, cfg, seed=0)
    n_ctx = ro.context
    if has_view_memory(model, cfg):
        ro.view = make_view_memory(model, cfg, len(real), ro.context, ro.device)
        ro.view.set_on(True, range(len(real)))
    ctx_act = torch.from_numpy(acts[:, :n_ctx]).clone()
    ctx_act[:, 0] = -1
    ro.reset(to_float(torch.from_numpy(real[:, :n_ctx])), ctx_act)
    if cfg.diffusion.sampler == "progressive":  # the whole action sequence at once
        return to_uint8(ro.stream(torch.from_numpy(acts[:, n_ctx:]))).cpu().numpy()
    gen = []
    with torch.inference_mode():
        for t in range(n_ctx, real.shape[1]):
            gen.append(to_uint8(ro.step(torch.from_numpy(acts[:, t]))).cpu().numpy())
    return np.stack(gen, 1)


def compare(real: np.ndarray, gen: np.ndarray, final: list, n_ctx: int, after: int = 100) -> dict:
    """The rows' figures of imagined frames against the real ones (see module docstring)."""
    real = real[:, n_ctx:]
    unlike = 1 - cell_report(gen).mean()
    late = slice(max(0, after - n_ctx), None)
    same = (np.abs(frame_cells(real[:, late]).astype(np.int16)
                   - frame_cells(gen[:, late]).astype(np.int16)).max((-3, -2, -1)) <= 24)
    names = game_tables()[0]
    shown = read_values(gen[:, -1])
    within = {}
    for i, n in enumerate(names[:4]):
        truth = np.asarray([f.get(n, 0) for f in final])
        within[n] = float(np.mean(np.abs(shown[:, i] - truth) <= 1))
    wood = names.index("wood")
    return {"unlike_any_real_cell": round(float(unlike), 5),
            f"equal_to_real_after_step_{after}": round(float(same.mean()), 4),
            "value_within_1_at_end": within,
            "worlds": [{"real_end": {n: int(f.get(n, 0)) for n in names[:6]},
                        "shown_end": {n: int(shown[w, j]) for j, n in enumerate(names[:6])},
                        "wood_changes_real": int((np.diff(read_values(real[w])[:, wood]) != 0).sum()),
                        "wood_changes_shown": int((np.diff(read_values(gen[w])[:, wood]) != 0).sum())}
                       for w, f in enumerate(final)]}


def with_and_without(stages: list[Stage], stage: type, who: str) -> tuple[list[Stage], list[Stage]]:
    """A checkpoint's stages with `stage` (made from its labelled codebook, right after the snap,
    where the checkpoint lacks it) and without it, for a measurement of that stage."""
    stages = list(stages)
    if not any(st.name == stage.name for st in stages):
        snaps = [i for i, st in enumerate(stages) if st.name == "codebook snap"]
        if not snaps or stages[snaps[0]].book.labels is None:
            raise SystemExit(f"{who}: the checkpoint has no labelled tile codebook")
        stages.insert(snaps[0] + 1, stage(stages[snaps[0]].book))
    return stages, [st for st in stages if st.name != stage.name]


def main(argv: list[str] | None = None) -> dict:
    from worldmodel.checkpoint import load_checkpoint
    from worldmodel.cli import common_flags
    from worldmodel.data.episode import write_json_atomic
    from worldmodel.evaluation.reports import command_line

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[common_flags(checkpoint={"default": "assets/crafter_memory"},
                                                      out={"help": "write the JSON report here"})])
    p.add_argument("--worlds", type=int, default=8)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--long", type=int, default=0, help="also one world's rollout of this many frames")
    p.add_argument("--first-seed", type=int, default=1_000_000, help="held-out seeds from here")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, cfg = load_checkpoint(args.checkpoint, "cpu")
    stages, base = with_and_without(model.stages, StatusStage, "games.crafter.status")
    seeds = list(range(args.first_seed, args.first_seed + args.worlds))
    real, acts, _, final = real_runs(seeds, args.steps)
    n_ctx = cfg.data.window - 1
    report = {"command": command_line("games.crafter.status", argv), "checkpoint": args.checkpoint,
              "memory": "on", "steps": args.steps, "seeds": seeds}
    for key, st in (("with_status_stage", stages), ("without", base)):
        report[key] = compare(real, imagine(model, cfg, real, acts, st), final, n_ctx)
        r = report[key]
        print(f"{key:17s} unlike any real cell {r['unlike_any_real_cell']:.2%}  equal to real "
              f"after step 100 {r['equal_to_real_after_step_100']:.1%}  within 1 at the end: "
              + " ".join(f"{n} {v:.0%}" for n, v in r["value_within_1_at_end"].items()))
    if args.long:
        real_l, acts_l, _, _ = real_runs([seeds[0] + 500_000], args.long)
        gen = imagine(model, cfg, real_l, acts_l, stages)
        report["long"] = {"frames": args.long, "seed": seeds[0] + 500_000,
                          "unlike_any_real_cell": round(float(1 - cell_report(gen).mean()), 6)}
        print(f"long rollout ({args.long} frames): unlike any real cell "
              f"{report['long']['unlike_any_real_cell']:.3%}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out), report)
    return report


if __name__ == "__main__":
    from games.crafter.status import main as status_main  # the module's classes, not __main__'s
    from worldmodel.cli import run_cli

    run_cli(status_main)

"""Play a neural world model in a window, record scripted rollouts, or replay recordings.

  python run_sim.py [options]                  play: every frame after the real start is imagined
  python run_sim.py record --actions FILE --out DIR [--frames N] ...   headless scripted rollout
  python run_sim.py replay DIR                 play a recording back
  python run_sim.py export DIR                 (re)write its video.mp4 from frames.u8
  python run_sim.py serve [--host 127.0.0.1] [--port 8765] [--checkpoint DIR] [--batch B]
                                               reset/step/rollout over local HTTP (JSON)
  python run_sim.py plan --task reach|return|both --episodes N [--checkpoint DIR]
                                               CEM planner in imagination, on the real game, vs random

  python run_sim.py --game minetest --real    the real game itself in the window (no model)

Keys while playing (Crafter, as in crafter's own run_gui): WASD/arrows move, space = do (interact),
tab = sleep, r/t/f/p = place stone/table/furnace/plant, 1-6 = make wood/stone/iron pickaxe,
wood/stone/iron sword. Minetest: WASD walk and strafe, arrows (or Q/E) turn and tilt, space
jumps, F digs, R places. A held key repeats once per frame; no key = noop.
Controls: h help overlay, enter (or Pause) pause, n or . one frame while paused,
backspace reset to a new start (next seed / next episode of --start), o or F12 screenshot,
c start/stop recording, m episodic memory on/off (on from the start for a model with a view
memory; --no-memory starts without), v the remembered map
(models with a view memory) beside the game, F5 save the world (its memory and where it stands)
into --memory-dir, F9 load it back, esc or closing quits. --resume-memory DIR starts play in a
world saved with F5, memory on.

Exit codes: 0 done; 2 anything to fix, told in one line (a bad checkpoint, config, episode or
actions file, a folder that cannot be written, no display, a --resume-memory folder that cannot be
resumed, a game not installed: Minetest names scripts/install_system.sh); 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import signal
import sys
from pathlib import Path

from worldmodel.game import get_game


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="model folder (model.safetensors + config.json); default: the shipped "
                        "model in assets/crafter_memory")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda (default: cuda if "
                                                  "available)")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps per frame (overrides the checkpoint's sample_steps)")
    p.add_argument("--start", default=None, metavar="EPISODE_DIR",
                   help="start from the first frames of a recorded episode (or a folder of "
                        "them, cycled by reset) instead of a fresh seed of the real game")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                   help="episodic memory on (--memory) or off (--no-memory) from the start "
                        "(toggle with m while playing); default: on where the model has a view "
                        "memory (the shipped default), else off")
    p.add_argument("--memory-config", default=None, metavar="YAML",
                   help="the memory: section of this YAML sets the episodic memory (rank, lr, "
                        "update_every, ...; e.g. configs/crafter.yaml); default: its defaults")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads of the frame loop (default: torch's, all cores). With "
                        "--memory on a small CPU leave the memory worker a core (--threads 1 on 2 "
                        "cores), or it barely learns")


def play_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_sim.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(sp.format_help() for sp in (record_parser(), replay_parser(),
                                                       export_parser())))
    _common(p)
    p.add_argument("--seed", type=int, default=None,
                   help="real-game seed of the start frames (default: a random one, printed)")
    p.add_argument("--fps", type=float, default=None,
                   help="target frames per second (default: the game's, 10 for Crafter; 0 = as "
                        "fast as the model runs)")
    p.add_argument("--scale", type=int, default=8, help="display scale (8: 64x64 -> 512x512)")
    p.add_argument("--side-by-side", action="store_true",
                   help="run the real game with the same actions next to the model")
    p.add_argument("--game", default=None,
                   help="the game: crafter or minetest (default: the checkpoint's; with --real, "
                        "crafter)")
    p.add_argument("--real", action="store_true",
                   help="play the real game itself in the window (no model): the ground truth, "
                        "with its pose in the HUD")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="record from the first frame into episode folder DIR (if taken: DIR-2, ...)")
    p.add_argument("--recordings", default="recordings",
                   help="where recordings started with the c key go (default: recordings/)")
    p.add_argument("--screenshots", default="screenshots", help="where screenshots go")
    p.add_argument("--memory-dir", default=None, metavar="DIR",
                   help="where F5 saves the world and F9 loads it (default: "
                        "RECORDINGS/memory_saves/world). A save replaces an earlier one whole, "
                        "once complete; a folder holding anything else, or a symlink, is refused")
    p.add_argument("--resume-memory", default=None, metavar="DIR",
                   help="start in a world saved with F5 (its memory and where it stood) instead "
                        "of a fresh start, with memory on (as --memory)")
    p.add_argument("--stats", action="store_true",
                   help="print frame timings (fps, model ms, window overhead ms) when closing")
    p.add_argument("--max-frames", type=int, default=None, help="quit after this many frames")
    return p


def record_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_sim.py record",
        description="Headless scripted rollout into an episode folder (frames.u8, actions.jsonl, "
                    "meta.json, video.mp4). ACTIONS FILE: a JSON list of action names or indices, "
                    "or one action (name or index) per line; # starts a comment.")
    _common(p)
    p.add_argument("--actions", required=True, metavar="FILE", help="the scripted actions")
    p.add_argument("--out", required=True, metavar="DIR", help="episode folder to write (new or empty)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames to imagine (default: one per action; more cycles the actions)")
    p.add_argument("--seed", type=int, default=0, help="real-game seed of the start frames")
    p.add_argument("--chunk", type=int, default=1, help="frames generated jointly per model call")
    p.add_argument("--fps", type=int, default=10, help="frame rate written to meta.json and the video")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def episode_parser(command: str, description: str) -> argparse.ArgumentParser:
    """A subcommand that takes one episode folder."""
    p = argparse.ArgumentParser(prog=f"run_sim.py {command}", description=description)
    p.add_argument("episode", metavar="DIR", help="episode folder (meta.json, frames.u8, ...)")
    return p


def replay_parser() -> argparse.ArgumentParser:
    p = episode_parser("replay", "Play an episode folder back: space/p pause, n or . step, "
                                 "left/right scrub, home/end jump, o screenshot, esc quit.")
    p.add_argument("--fps", type=float, default=None, help="playback fps (default: the episode's)")
    p.add_argument("--scale", type=int, default=8)
    p.add_argument("--max-frames", type=int, default=None, help="quit after this many frames")
    return p


def export_parser() -> argparse.ArgumentParser:
    return episode_parser("export", "Write an episode folder's video.mp4 from its lossless "
                                    "frames.u8 (e.g. after a kill left the video unplayable; "
                                    "replay also rebuilds such a video).")


def fail(msg: str, code: int = 2) -> int:
    """One line on stderr; exit status 2 for anything the user must fix (the convention of every
    command: worldmodel.cli.run_cli, argparse)."""
    print(f"error: {msg}", file=sys.stderr)
    return code


def checkpoint_path(arg: str | None, game: str | None = None) -> Path:
    """--checkpoint, else the shipped model of --game (`Game.default_checkpoint`), else the
    shipped default (Crafter's)."""
    from simulator.session import DEFAULT_CHECKPOINT, ROOT

    shipped = get_game(game).default_checkpoint if game is not None and not arg else None
    if arg:
        path = Path(arg)
    elif shipped:
        path = ROOT / shipped
    elif game is not None:
        raise FileNotFoundError(f"no model of {game} ships (give --checkpoint; --real plays the "
                                "real game)")
    else:
        path = DEFAULT_CHECKPOINT
    if not (path / "config.json").is_file():
        hint = (" (the shipped model is not there: train one with "
                "`python -m worldmodel.training.train` and pass --checkpoint)") if arg is None else ""
        raise FileNotFoundError(f"no model checkpoint at {path}{hint}")
    return path


def load_session(args: argparse.Namespace, seed: int):
    from memory.config import load_memory_config
    from simulator.session import WorldSession

    session = WorldSession.load(checkpoint_path(args.checkpoint, getattr(args, "game", None)),
                                device=args.device,
                                sample_steps=args.steps, seed=seed,
                                memory=load_memory_config(args.memory_config))
    if memory_wanted(args, session):
        session.set_memory(True)
    return session


def memory_wanted(args: argparse.Namespace, session) -> bool:
    """--memory / --no-memory, else on for a model with a view memory (what keeps its world)."""
    return args.memory if args.memory is not None else session.view is not None


def close_session(session) -> None:
    close = getattr(session, "close", None)  # stops the memory's worker thread, if any
    if close is not None:
        close()


def resume_memory(session, folder: str) -> str | None:
    """Put `session` in the world saved in `folder` with memory on; what went wrong, or None."""
    from memory.lora import MemoryFileError

    try:
        session.load_memory(folder)
        session.set_memory(True)
    except (MemoryFileError, ValueError, RuntimeError, OSError) as e:
        return f"--resume-memory {folder}: {' '.join(str(e).split())}"
    print(f"resuming the world saved in {folder} (step {session.steps}), memory on")
    return None


def real_session(args: argparse.Namespace):
    """The real game of --game (default crafter) behind the session interface (--real)."""
    from simulator.real_session import RealSession

    return RealSession(args.game or "crafter")


def play(args: argparse.Namespace) -> int:
    if args.real:
        bad = [flag for flag, on in (("--side-by-side", args.side_by_side), ("--memory", args.memory),
                                     ("--resume-memory", args.resume_memory), ("--start", args.start),
                                     ("--checkpoint", args.checkpoint)) if on]
        if bad:
            return fail(f"--real plays the real game alone: {', '.join(bad)} need a model")
    try:
        from simulator.play import PlayApp
        from simulator.window import NoDisplayError, Window, format_summary
    except ImportError as e:
        return fail(f"the window needs pygame ({e}); `python run_sim.py record` works without it")
    try:  # before loading anything heavy: no display is the fastest answer
        window = Window("neural game simulator")
    except NoDisplayError as e:
        print(e, file=sys.stderr)
        return 2
    from simulator.recorder import Start

    session = None
    try:
        seed = args.seed if args.seed is not None else random.randrange(10**9)
        start = Start.from_args(seed, args.start)
        if args.start is None and args.resume_memory is None:
            print(f"starting from seed {seed} of the real game")
        if args.real:
            session, ckpt = real_session(args), None
            window.title += f" - real {session.game}"
        else:
            ckpt = checkpoint_path(args.checkpoint, args.game)
            window.title += f" - {ckpt.name}"
            session = load_session(args, seed)
            if args.game is not None and args.game != session.game:
                return fail(f"{ckpt} is a model of {session.game}, not {args.game} (no model of "
                            f"{args.game} ships yet: --real plays the real game)")
        if args.resume_memory is not None:
            error = resume_memory(session, args.resume_memory)
            if error is not None:
                return fail(error, 2)
        fps = args.fps
        if fps is None:
            fps = get_game(session.game).fps
        app = PlayApp(session, start, window, fps=fps, scale=args.scale,
                      side_by_side=args.side_by_side, record=args.record,
                      recordings=args.recordings, screenshots=args.screenshots,
                      settings={"checkpoint": str(ckpt) if ckpt else None, "real": args.real},
                      memory_dir=args.memory_dir,
                      resumed_from=args.resume_memory)
        app.run(max_frames=args.max_frames)
    except NoDisplayError as e:
        print(e, file=sys.stderr)
        return 2
    finally:
        if session is not None:
            close_session(session)
        window.close()
    if args.stats:
        print(format_summary(app.stats.summary()))
    return 0


def record(args: argparse.Namespace) -> int:
    from simulator.recorder import Start, check_out_folder, load_actions, record_rollout
    from worldmodel.actions import get_action_space

    check_out_folder(args.out)  # an unwritable --out is told before the model loads
    ckpt = checkpoint_path(args.checkpoint)
    from worldmodel.checkpoint import load_config_from_checkpoint

    space = get_action_space(load_config_from_checkpoint(ckpt).model.action_space)
    actions = load_actions(args.actions, space)
    frames = args.frames if args.frames is not None else len(actions)
    if frames < 1 or args.chunk < 1:
        return fail("--frames and --chunk must be at least 1")
    session = load_session(args, args.seed)
    start = Start.from_args(args.seed, args.start)
    meta = {"checkpoint": str(ckpt), "actions_file": str(args.actions),
            "settings": {"frames": frames, "chunk": args.chunk, "device": str(session.device),
                         "sample_steps": session.cfg.diffusion.sample_steps}}
    meta["settings"]["memory"] = getattr(session, "memory_enabled", None)
    if meta["settings"]["memory"]:
        meta["settings"]["memory_config"] = dataclasses.asdict(session.memory_config)
    try:
        out = record_rollout(session, start, actions, args.out, frames, chunk=args.chunk,
                             fps=args.fps, meta=meta, progress=not args.no_progress)
    finally:
        close_session(session)
    print(f"wrote {frames} imagined frames to {out}")
    return 0


def replay(args: argparse.Namespace) -> int:
    from worldmodel.data.episode import load_episode
    from worldmodel.data.video import ensure_video

    episode = load_episode(args.episode)
    try:  # a recorder killed mid-way left a video nothing plays
        if ensure_video(episode) is not None:
            print(f"rebuilt {episode.path}/video.mp4 from frames.u8 (it was unplayable or cut "
                  f"short)", file=sys.stderr)
    except OSError as e:  # e.g. a read-only copy: replay does not need the video
        print(f"warning: could not rebuild the video: {e}", file=sys.stderr)
    from simulator.window import NoDisplayError, Window
    from simulator.replay import ReplayApp

    try:
        window = Window(f"replay - {args.episode}")
    except NoDisplayError as e:
        print(e, file=sys.stderr)
        return 2
    ReplayApp(episode, window, fps=args.fps, scale=args.scale).run(args.max_frames)
    return 0


def export(args: argparse.Namespace) -> int:
    from worldmodel.data.episode import load_episode
    from worldmodel.data.video import export_video

    episode = load_episode(args.episode, mmap=True)
    print(f"wrote {export_video(episode)} ({len(episode.frames)} frames)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from simulator.service import COMMANDS as SERVICE_COMMANDS  # serve, plan

    commands = {"record": (record_parser, record), "replay": (replay_parser, replay),
                "export": (export_parser, export), **SERVICE_COMMANDS}
    make, run = commands.get(argv[0], (play_parser, play)) if argv else (play_parser, play)
    args = make().parse_args(argv[1:] if make is not play_parser else argv)
    from worldmodel.cli import USER_ERRORS

    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            return fail(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    try:
        return run(args)
    except (*USER_ERRORS, OSError) as e:  # bad input or a failing disk; bugs keep tracebacks
        return fail(str(e))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so an open recording is finalized
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())

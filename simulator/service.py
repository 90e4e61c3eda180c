"""A `WorldSession` over HTTP, for planners and RL code in other processes or languages.

    python run_sim.py serve --port 8765 --checkpoint runs/crafter --batch 8 [--memory] [--threads N]
                            [--saves DIR]

Stdlib only (http.server): a ThreadingHTTPServer whose handlers share one session behind a lock.
Binds 127.0.0.1 unless told otherwise: the service runs a model for anyone who can reach it.
Web pages the user opens can reach it too, so (simulator/origin.py) every request needs a
loopback `Host` with the service's port (127.0.0.1:P, localhost:P, [::1]:P: no DNS rebinding),
and every POST `Content-Type: application/json` and no `Origin` but the service's own (no
cross-site request forgery); anything else is a 403 and nothing is done.

Requests (JSON bodies of at most `max_body` bytes; every field checked, unknown fields refused):

    GET  /info      -> {"actions": [names], "batch": B, "frame_size": 64, "context_len": n,
                        "max_rollout_steps": T, "max_body_bytes": ..., "encodings": ["png", "raw"],
                        "memory": [bool] * B}
    POST /reset     {"seed": int}                  real-game context, world i from seed + i
                    {"context": FRAMES, "context_actions": [[int]]}   or given frames
                    -> {"frames": FRAMES (B, h, w, 3), "step": 0}
    POST /step      {"actions": [int | name] * B}  -> {"frames": FRAMES (B, h, w, 3), "step": s}
    POST /rollout   {"actions": [[int | name] * T] * B, "seed" | "context": ...}
                    -> {"frames": FRAMES (B, T, h, w, 3), "step": s}
    POST /memory    {"on": true | false, "worlds": int | [int]}   episodic memory per world
                    -> {"memory": [bool] * B}     (no "worlds": every world)
    GET  /minimap?world=i&radius=r&encoding=png|raw   world i's remembered map (models with a
                    view memory; defaults 0, 12, png) -> {"minimap": FRAMES (H, W, 3), "world": i}
    POST /memory/save {"name": NAME, "world": int}  world i's whole memory and where it stands
                    -> {"name": NAME, "world": i, "step": s}  (s: world i's step)
    POST /memory/load {"name": NAME, "world": int}  resume a saved world in world i (memory stays
                    on or off as it was) -> {"frames": FRAMES (B, h, w, 3), "step": s,
                    "world_step": w, "name": NAME, "world": i, "memory": [bool] * B}

/memory switches episodic memory (a view memory of what each world saw where, for models trained
with one, and a temporal LoRA each world fast-learns from its own frames in a background thread)
on or off for the given worlds; what a world learned is kept while it is off, and /reset starts
every world's memory afresh. `--memory` serves with it on for every world. /memory/save and
/memory/load write and read save NAME (1 to 64 of A-Z a-z 0-9 _ -, never a path) in the folder
`--saves DIR` names, and nowhere else (WorldSession.save_memory / load_memory, memory.saves;
"world" defaults to 0); without --saves they are 400s and the service writes no file. A save
replaces an earlier one of that name only once it is complete; a load checks the whole save
before it changes anything. A load before any reset starts every world there; world i's step
becomes the saved one ("world_step"), the session's "step" goes on (with one world both are the
saved one). A missing, corrupt or foreign save is a 400 that leaves every world as it was.

Every POST but /memory and /memory/save also takes "encoding": "png" (default) or "raw" for the
frames it returns.
FRAMES is
    {"encoding": "png", "shape": [...], "data": [base64 PNG per frame, leading dims row-major]}
    {"encoding": "raw", "shape": [...], "data": base64 of the uint8 bytes, row-major}
and a request's "context" is FRAMES with shape (n, h, w, 3) (shared by all worlds) or
(B, n, h, w, 3), or simply a list of base64 PNG strings (n frames, shared). Context actions are
ints or names, -1 for "none" (the first frame's).

Errors are JSON {"error": message} (quoting at most 200 characters of any input) with 400
(malformed JSON or field, nesting deeper than MAX_DEPTH, a garbage request line, a bad save), 403
(a request a web page could have sent: see above), 404 (path), 405 (method, e.g. HEAD or
OPTIONS), 408 (a body
that stops arriving), 411 (no Content-Length), 413 (body too large), 409 (step before any reset),
501 (a method HTTP does not have), 505 (HTTP/2 and up), 500 (a bug: the server stays up and logs
it). A connection idle for `timeout` seconds (30; `--timeout`) is closed. Examples: see
tests/simulator/test_service.py.

The service's parts: simulator.service_wire (FRAMES, request checks), simulator.service_handlers
(`WorldService`: each request on the session), simulator.origin (which requests are taken), and
here the HTTP server and the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from memory.config import load_memory_config
from memory.saves import SaveRoot, SaveRootError
from simulator import planner
from simulator.origin import allowed_hosts, refusal
from simulator.service_handlers import WorldService
from simulator.service_wire import RequestError, bad, png_decode, png_encode
from simulator.session import WorldSession
from worldmodel.cli import common_flags, run_cli

DEFAULT_PORT = 8765
DEFAULT_TIMEOUT = 30.0  # seconds a connection may sit idle (or a body take to arrive)

# The wire format's and the requests' names, importable from here as before the split.
__all__ = ["COMMANDS", "DEFAULT_PORT", "DEFAULT_TIMEOUT", "Handler", "RequestError", "Server",
           "WorldService", "make_server", "plan_command", "plan_parser", "png_decode", "png_encode",
           "serve", "serve_command", "serve_parser"]


class Handler(BaseHTTPRequestHandler):
    service: WorldService  # set on the subclass make_server builds
    server_version = "worldmodel-service/1"
    quiet = False
    timeout = DEFAULT_TIMEOUT  # socketserver applies it to every connection

    def reply(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":  # HEAD answers carry the headers only
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a garbage request line, HTTP/2 and up, a method it has no
        do_ for, oversized headers) in JSON like every other error. A request too broken to name
        its version still gets a status line: this service does not speak HTTP/0.9."""
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        phrase = self.responses.get(code, ("error",))[0]
        self.reply(code, {"error": message or phrase})

    def dispatch(self, method: str) -> None:
        headers = None
        try:
            body = b""
            if method in ("GET", "POST"):  # the methods that do anything (others are 405s)
                host, port = self.server.server_address[:2]
                why = refusal(method, self.headers, allowed_hosts(str(host)), port)
                if why is not None:
                    self.close_connection = True  # the body (if any) is not read
                    raise bad(why, HTTPStatus.FORBIDDEN)
            if method != "POST" and self.headers.get("Content-Length", "0") != "0":
                self.close_connection = True  # a body we do not read would pose as the next request
            if method == "POST":
                length = self.headers.get("Content-Length")
                if length is None:
                    raise bad("POST needs a Content-Length header", HTTPStatus.LENGTH_REQUIRED)
                try:
                    n = int(length)
                except ValueError:
                    raise bad(f"bad Content-Length {length!r:.40}") from None
                if n < 0:
                    raise bad(f"bad Content-Length {length!r:.40}")
                if n > self.service.max_body:
                    self.close_connection = True  # the unread body is not ours to drain
                    raise bad(f"body of {n} bytes exceeds the limit of {self.service.max_body}",
                              HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                body = self.rfile.read(n)
            status, obj = self.service.handle(method, self.path, body)
        except RequestError as e:
            status, obj, headers = e.status, {"error": e.message}, e.headers
        except TimeoutError:  # the body stopped arriving
            self.close_connection = True
            status, obj = 408, {"error": f"the body did not arrive within {self.timeout:g} s"}
        except Exception as e:  # a bug, not the client's fault: say so and stay up
            traceback.print_exc(file=sys.stderr)
            status, obj = 500, {"error": f"internal error: {type(e).__name__}: {str(e):.200}"}
        self.reply(status, obj, headers)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self.dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self.dispatch("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802
        self.dispatch("HEAD")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self.dispatch("OPTIONS")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if not self.quiet:
            super().log_message(format, *args)


class Server(ThreadingHTTPServer):
    """The service's HTTP server: a listen queue long enough for many clients at once (the
    standard library's is 5: a burst of parallel connections got resets)."""

    request_queue_size = 1024
    daemon_threads = True


def make_server(session: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                quiet: bool = False, timeout: float = DEFAULT_TIMEOUT,
                saves: Any = None, **limits: int) -> ThreadingHTTPServer:
    """A server (not yet serving) around `session`; port 0 picks a free one (`server.server_port`);
    a connection idle for `timeout` seconds is closed (else idle clients hold threads forever).
    `saves`: the folder /memory/save and /memory/load keep saves in, by name (None: none)."""
    handler = type("WorldHandler", (Handler,), {"service": WorldService(session, saves=saves,
                                                                        **limits),
                                                "quiet": quiet, "timeout": timeout})
    server = Server((host, port), handler)
    server.daemon_threads = True
    return server


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, checkpoint: str | Path | None = None,
          batch: int = 1, device: str | None = None, sample_steps: int | None = None,
          max_steps: int = 256, memory: bool = False,
          memory_config: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT,
          saves: str | Path | None = None) -> None:
    """Load a session and serve it until interrupted (memory: episodic memory on for every
    world from the start; memory_config: a YAML whose memory: section sets it up; saves: the
    folder /memory/save and /memory/load keep saves in, by name, None for none)."""
    root = None if saves is None else SaveRoot(saves)  # refused before the model loads
    session = WorldSession.load(checkpoint, device=device, batch=batch, sample_steps=sample_steps,
                                memory=load_memory_config(memory_config))
    if memory:
        session.set_memory(True)
    server = make_server(session, host, port, timeout=timeout, max_steps=max_steps, saves=root)
    print(f"serving {session.checkpoint} (batch {batch}) on http://{host}:{server.server_port} "
          f"- GET /info /minimap, POST /reset /step /rollout /memory /memory/save "
          f"/memory/load" + (f" (saves in {root.root})" if root else " (no --saves: no saves)"),
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        session.close()


# ------------------------------------------------------------------ run_sim.py subcommands


def serve_parser() -> argparse.ArgumentParser:
    shared = common_flags(checkpoint={"help": "model folder (default: the shipped model)"},
                          device=True,
                          threads={"default": None,
                                   "help": "torch CPU threads of the model (default: torch's, all "
                                           "cores)"})
    p = argparse.ArgumentParser(prog="run_sim.py serve", description=__doc__, parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--batch", type=int, default=1, help="worlds per session")
    p.add_argument("--steps", type=int, default=None, help="denoising steps per frame")
    p.add_argument("--max-rollout-steps", type=int, default=256)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds a connection may sit idle before it is closed (default: "
                        f"{DEFAULT_TIMEOUT:g})")
    p.add_argument("--memory", action="store_true",
                   help="episodic memory on for every world from the start (POST /memory "
                        "switches it)")
    p.add_argument("--memory-config", default=None, metavar="YAML",
                   help="the memory: section of this YAML sets the episodic memory")
    p.add_argument("--saves", default=None, metavar="DIR",
                   help="the folder /memory/save and /memory/load keep saved worlds in, by name "
                        "(made if missing; not a symlink). Without it the service writes no "
                        "files and those endpoints answer 400")
    return p


def serve_args_error(args: argparse.Namespace) -> str | None:
    """What is wrong with `serve`'s arguments, told at start-up (a batch of 0 would start and then
    fail every reset), or None."""
    for name, value in (("--batch", args.batch), ("--max-rollout-steps", args.max_rollout_steps),
                        ("--threads", 1 if args.threads is None else args.threads)):
        if value < 1:
            return f"{name} must be at least 1, got {value}"
    if not 0 <= args.port <= 65535:
        return f"--port must be in 0..65535, got {args.port}"
    if not args.timeout > 0:
        return f"--timeout must be positive, got {args.timeout:g}"
    if args.saves is not None:
        try:
            SaveRoot(args.saves)
        except SaveRootError as e:
            return f"--saves: {e}"
    return None


def serve_command(args: argparse.Namespace) -> int:
    error = serve_args_error(args)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.threads is not None:  # run_sim.py sets it too; `python -m simulator.service` does not
        import torch

        torch.set_num_threads(args.threads)
    serve(args.host, args.port, args.checkpoint, args.batch, args.device, args.steps,
          args.max_rollout_steps, args.memory, args.memory_config, args.timeout, args.saves)
    return 0


def plan_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_sim.py plan", description=planner.__doc__,
                                parents=[planner.shared_flags()],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    planner.add_arguments(p)
    p.set_defaults(threads=None)  # run_sim.py takes None as torch's default and refuses 0
    return p


def plan_command(args: argparse.Namespace) -> int:
    planner.run(args)
    return 0


# For run_sim.py: {name: (parser factory, command(args) -> exit code)}
COMMANDS = {"serve": (serve_parser, serve_command), "plan": (plan_parser, plan_command)}


def main(argv: list[str] | None = None) -> None:
    """python -m simulator.service [--port N] ... (the same as run_sim.py serve)."""
    sys.exit(serve_command(serve_parser().parse_args(argv)))


if __name__ == "__main__":
    run_cli(main)

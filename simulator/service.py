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
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import struct
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from memory.saves import NAME
from simulator.origin import allowed_hosts, refusal
from worldmodel.actions import ActionError

DEFAULT_PORT = 8765
DEFAULT_TIMEOUT = 30.0  # seconds a connection may sit idle (or a body take to arrive)
MAX_DEPTH = 16  # JSON nesting; the deepest valid request nests 3
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class RequestError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad(message: str, status: int = HTTPStatus.BAD_REQUEST,
        headers: dict[str, str] | None = None) -> RequestError:
    return RequestError(int(status), message, headers)


# ---------------------------------------------------------------------------- frame encoding


def png_encode(frame: np.ndarray) -> str:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def png_decode(data: Any, size: int) -> np.ndarray:
    """base64 PNG -> (size, size, 3) uint8; the header's size is checked before decoding (a tiny
    PNG can inflate to gigabytes)."""
    import cv2

    if not isinstance(data, str):
        raise bad("a PNG frame must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad("a PNG frame is not valid base64") from None
    if len(raw) < 24 or raw[:8] != PNG_MAGIC or raw[12:16] != b"IHDR":
        raise bad("a frame is not a PNG")
    w, h = struct.unpack(">II", raw[16:24])
    if (h, w) != (size, size):
        raise bad(f"a PNG frame is {w}x{h}, the model takes {size}x{size}")
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.shape != (size, size, 3):
        raise bad("a PNG frame could not be decoded as an RGB image")
    return np.ascontiguousarray(img[..., ::-1])


def encode_frames(frames: np.ndarray, encoding: str) -> dict[str, Any]:
    frames = np.ascontiguousarray(frames, np.uint8)
    if encoding == "raw":
        return {"encoding": "raw", "shape": list(frames.shape), "dtype": "uint8",
                "data": base64.b64encode(frames.tobytes()).decode("ascii")}
    flat = frames.reshape(-1, *frames.shape[-3:])
    return {"encoding": "png", "shape": list(frames.shape), "data": [png_encode(f) for f in flat]}


def decode_frames(obj: Any, size: int, max_frames: int, batch: int) -> np.ndarray:
    """FRAMES (see module docstring) or a list of base64 PNGs -> uint8 (..., size, size, 3)."""
    if isinstance(obj, list):
        obj = {"encoding": "png", "shape": [len(obj), size, size, 3], "data": obj}
    if not isinstance(obj, dict):
        raise bad("context must be a list of base64 PNG frames or a frames object")
    check_keys(obj, {"encoding", "shape", "data", "dtype"}, "context", required={"shape", "data"})
    shape = obj["shape"]
    if (not isinstance(shape, list) or len(shape) not in (4, 5)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
            or tuple(shape[-3:]) != (size, size, 3)):
        raise bad(f"context shape must be [n, {size}, {size}, 3] or [B, n, {size}, {size}, 3], "
                  f"got {shape!r:.200}")
    if len(shape) == 5 and shape[0] != batch:
        raise bad(f"context is for {shape[0]} worlds, the session has {batch}")
    n = int(np.prod(shape[:-3]))
    if n > max_frames:
        raise bad(f"context holds {n} frames; at most {max_frames}", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    enc = obj.get("encoding", "png")
    if enc == "raw":
        if obj.get("dtype", "uint8") != "uint8" or not isinstance(obj["data"], str):
            raise bad("raw context data must be a base64 string of uint8 bytes")
        try:
            raw = base64.b64decode(obj["data"], validate=True)
        except (binascii.Error, ValueError):
            raise bad("raw context data is not valid base64") from None
        if len(raw) != n * size * size * 3:
            raise bad(f"raw context data has {len(raw)} bytes, shape {shape} needs {n * size * size * 3}")
        return np.frombuffer(raw, np.uint8).reshape(shape).copy()
    if enc != "png":
        raise bad(f"unknown encoding {enc!r:.100}; use png or raw")
    if not isinstance(obj["data"], list) or len(obj["data"]) != n:
        raise bad(f"png context data must be a list of {n} base64 frames for shape {shape}")
    return np.stack([png_decode(d, size) for d in obj["data"]]).reshape(shape)


# ------------------------------------------------------------------------------- validation


def check_keys(obj: dict, allowed: set[str], where: str, required: set[str] = frozenset()) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise bad(f"unknown field(s) {str(unknown):.200} in {where}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(obj))
    if missing:
        raise bad(f"{where} needs field(s) {missing}")


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def nesting(obj: Any) -> int:
    """How deep JSON `obj` nests lists and objects, counted without recursion (the messages that
    quote a request could not print one nested past Python's recursion limit)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if isinstance(o, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


class WorldService:
    """Validation and dispatch, apart from HTTP: `handle(method, path, body) -> (status, reply)`."""

    def __init__(self, session: Any, max_steps: int = 256, max_context: int = 256,
                 max_body: int = 8 << 20, saves: Any = None):
        from memory.saves import SaveRoot

        self.session = session
        # The one folder /memory/save and /memory/load touch (memory.saves.SaveRoot); None: no
        # saves at all.
        self.saves = None if saves is None else (saves if isinstance(saves, SaveRoot)
                                                 else SaveRoot(saves))
        self.max_steps = max_steps
        self.max_context = max_context
        self.max_body = max_body
        space = session.space
        self.discrete = space.kind == "discrete"
        # a discrete space's action names; a continuous one's actions are vectors of `dim` numbers
        self.names = list(space.actions) if self.discrete else None
        self.lock = threading.Lock()
        self.ready = False

    def info(self) -> dict[str, Any]:
        s = self.session
        acts = self.names if self.discrete else {"vector": s.space.dim, "space": s.space.name}
        return {"actions": acts, "batch": s.batch, "frame_size": s.frame_size,
                "context_len": s.context_len, "max_rollout_steps": self.max_steps,
                "max_context_frames": self.max_context, "max_body_bytes": self.max_body,
                "encodings": ["png", "raw"], "checkpoint": s.checkpoint, "game": s.game,
                "memory": list(s.memory_worlds)}

    def action(self, a: Any, allow_none: bool = False) -> int | np.ndarray:
        if not self.discrete:  # buttons and camera deltas: a list of numbers
            dim = self.session.space.dim
            if (not isinstance(a, list) or len(a) != dim
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in a)):
                raise bad(f"an action of {self.session.space.name} is a list of {dim} numbers, "
                          f"got {str(a)[:100]}")
            try:
                return self.session.space.validate(np.asarray(a, np.float32))
            except ActionError as e:
                raise bad(str(e)[:200]) from None
        if isinstance(a, str):
            if a not in self.names:
                raise bad(f"unknown action {a!r:.100}; known: {self.names}")
            return self.names.index(a)
        if not is_int(a):
            raise bad(f"an action must be an int or a name, got {a!r:.100}")
        if allow_none and a == -1:
            return -1
        if not 0 <= a < len(self.names):
            raise bad(f"action {a} out of range 0..{len(self.names) - 1}")
        return a

    def actions(self, acts: Any, shape: str) -> np.ndarray:
        b = self.session.batch
        if shape == "B":
            if not isinstance(acts, list) or len(acts) != b:
                raise bad(f"actions must be a list of {b} actions (one per world), got {acts!r:.200}")
            return np.asarray([self.action(a) for a in acts], np.int64 if self.discrete else np.float32)
        if (not isinstance(acts, list) or len(acts) != b
                or not all(isinstance(r, list) for r in acts) or len({len(r) for r in acts}) != 1):
            raise bad(f"actions must be {b} equal-length lists of actions ([B][T]), got {acts!r:.200}")
        t = len(acts[0])
        if not 1 <= t <= self.max_steps:
            raise bad(f"rollout length must be 1..{self.max_steps}, got {t}")
        return np.asarray([[self.action(a) for a in row] for row in acts],
                          np.int64 if self.discrete else np.float32)

    def start(self, req: dict) -> dict[str, Any]:
        """The reset fields of a request -> kwargs for WorldSession.reset."""
        if "seed" in req and "context" in req:
            raise bad("give seed or context, not both")
        if "context_actions" in req and "context" not in req:
            raise bad("context_actions needs context")
        if "seed" in req:
            seed = req["seed"]
            if not is_int(seed) or not 0 <= seed < 2**31:
                raise bad(f"seed must be an int in 0..2**31-1, got {seed!r:.100}")
            return {"seed": seed}
        if "context" not in req:
            raise bad("reset needs seed or context")
        ctx = decode_frames(req["context"], self.session.frame_size, self.max_context,
                            self.session.batch)
        acts = None
        if "context_actions" in req:
            raw = req["context_actions"]
            n = ctx.shape[-4]
            rows = raw if ctx.ndim == 5 else [raw]
            if (not isinstance(raw, list) or not all(isinstance(r, list) and len(r) == n for r in rows)
                    or len(rows) != (ctx.shape[0] if ctx.ndim == 5 else 1)):
                raise bad(f"context_actions must match the context's leading shape {list(ctx.shape[:-3])}")
            acts = np.asarray([[self.action(a, allow_none=True) for a in r] for r in rows],
                              np.int64 if self.discrete else np.float32)
            acts = acts if ctx.ndim == 5 else acts[0]
        return {"context": ctx, "actions": acts}

    def memory_switch(self, req: dict) -> tuple[bool, Any]:
        """The fields of a /memory request -> (on, worlds as sent; None for all). The worlds are
        checked by `WorldSession.set_memory`, whose ValueError becomes the 400."""
        check_keys(req, {"on", "worlds"}, "/memory", required={"on"})
        on = req["on"]
        if not isinstance(on, bool):
            raise bad(f"on must be true or false, got {on!r:.100}")
        return on, req.get("worlds")

    def minimap(self, query: str) -> dict[str, Any]:
        """GET /minimap?world=i&radius=r&encoding=e."""
        try:
            params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query),
                              max_num_fields=8)
        except ValueError as e:
            raise bad(f"bad query string {query!r:.100}: {str(e):.100}") from None
        check_keys(params, {"world", "radius", "encoding"}, "/minimap")
        if any(len(v) != 1 for v in params.values()):
            raise bad("each /minimap query field may be given once")
        q = {k: v[0] for k, v in params.items()}

        def number(name: str, default: int, lo: int, hi: int) -> int:
            raw = q.get(name, str(default))
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not lo <= int(raw) <= hi:
                raise bad(f"{name} must be an int in {lo}..{hi}, got {raw!r:.100}")
            return int(raw)

        world = number("world", 0, 0, self.session.batch - 1)
        radius = number("radius", 12, 1, 64)
        enc = self.encoding(q)
        minimap = getattr(self.session, "minimap", None)
        if minimap is None:
            raise bad("this session has no minimap (no view memory)")
        with self.lock:
            try:
                img = minimap(world, radius)
            except ValueError as e:  # a model without a view memory
                raise bad(f"minimap: {str(e):.300}") from None
        return {"minimap": encode_frames(img, enc), "world": world}

    def saved_world(self, req: dict, path: str) -> tuple[str, int]:
        """The fields of a /memory/save or /memory/load request -> (save name, world)."""
        if "dir" in req:
            raise bad(f"{path} takes a save name (\"name\"), not a folder (\"dir\"): saves live "
                      f"in the service's --saves folder")
        check_keys(req, {"name", "world"} | ({"encoding"} if path == "/memory/load" else set()),
                   path, required={"name"})
        name, world = req["name"], req.get("world", 0)
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise bad(f"name must be 1 to 64 letters, digits, '_' or '-' (a save name, not a "
                      f"path), got {name!r:.100}")
        if not is_int(world) or not 0 <= world < self.session.batch:
            raise bad(f"world must be an int in 0..{self.session.batch - 1}, got {world!r:.100}")
        return name, world

    def memory_file(self, path: str, req: dict) -> tuple[int, dict[str, Any]]:
        """POST /memory/save and /memory/load: save `name` in the saves folder, nowhere else."""
        from memory.lora import MemoryFileError

        name, world = self.saved_world(req, path)
        if self.saves is None:
            raise bad(f"{path[1:]}: this service keeps no saves (start it with --saves DIR)")
        sess = self.session
        enc = self.encoding(req)
        with self.lock:
            try:
                folder = self.saves.folder(name)
                if path == "/memory/save":
                    if not self.ready:
                        raise bad("reset before saving a world", HTTPStatus.CONFLICT)
                    sess.save_memory(folder, world)
                    return 200, {"name": name, "world": world,
                                 "step": int(sess.world_steps[world])}
                if not folder.is_dir():
                    raise bad(f"memory/load: no save named {name}")
                was = list(sess.memory_worlds)
                sess.load_memory(folder, world)
                if sess.memory_worlds[world] != was[world]:
                    sess.set_memory(was[world], world)
                self.ready = True
                frames = np.asarray(sess.frame).reshape(sess.batch, *sess.frame.shape[-3:])
                return 200, {"frames": encode_frames(frames, enc), "step": int(sess.steps),
                             "world_step": int(sess.world_steps[world]), "name": name,
                             "world": world, "memory": list(sess.memory_worlds)}
            except MemoryFileError as e:
                raise bad(f"{path[1:]}: {self.private(e)}") from None

    def private(self, e: Exception) -> str:
        """An error about a save as one line, the saves folder's own path left out (a client
        names saves; where they live on the server's disk is not its business)."""
        text = " ".join(str(e).split())
        if self.saves is not None:
            text = text.replace(str(self.saves.root) + "/", "").replace(str(self.saves.root),
                                                                         "<saves>")
        return text[:600]

    def encoding(self, req: dict) -> str:
        enc = req.get("encoding", "png")
        if enc not in ("png", "raw"):
            raise bad(f"encoding must be 'png' or 'raw', got {enc!r:.100}")
        return enc

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        routes = {"/info": "GET", "/reset": "POST", "/step": "POST", "/rollout": "POST",
                  "/memory": "POST", "/minimap": "GET", "/memory/save": "POST",
                  "/memory/load": "POST"}
        path, _, query = path.partition("?")
        path = path.rstrip("/") or "/"
        if path not in routes:
            raise bad(f"no such endpoint {path:.100}; endpoints: {sorted(routes)}",
                      HTTPStatus.NOT_FOUND)
        if method != routes[path]:
            raise bad(f"{path} takes {routes[path]}", HTTPStatus.METHOD_NOT_ALLOWED,
                      {"Allow": routes[path]})
        if path == "/info":
            return 200, self.info()
        if path == "/minimap":
            return 200, self.minimap(query)
        try:
            req = json.loads(body)
        except RecursionError:
            raise bad(f"body nests deeper than {MAX_DEPTH} levels") from None
        except ValueError as e:  # bad JSON or UTF-8, or an int past Python's 4,300 digits
            raise bad(f"body is not valid JSON: {str(e):.200}") from None
        if not isinstance(req, dict):
            raise bad("body must be a JSON object")
        if nesting(req) > MAX_DEPTH:
            raise bad(f"body nests deeper than {MAX_DEPTH} levels")
        sess = self.session
        if path == "/memory":
            on, worlds = self.memory_switch(req)
            with self.lock:
                try:
                    sess.set_memory(on, worlds)
                except ValueError as e:  # e.g. a model without the layers memory adapts
                    raise bad(f"memory: {str(e):.300}") from None
                return 200, {"memory": list(sess.memory_worlds)}
        if path in ("/memory/save", "/memory/load"):
            return self.memory_file(path, req)
        enc = self.encoding(req)
        if path == "/reset":
            check_keys(req, {"seed", "context", "context_actions", "encoding"}, "/reset")
            kwargs = self.start(req)
            with self.lock:
                sess.reset(**kwargs)
                self.ready = True
                frames, step = np.asarray(sess.frame), sess.steps
        elif path == "/step":
            check_keys(req, {"actions", "encoding"}, "/step", required={"actions"})
            acts = self.actions(req["actions"], "B")
            with self.lock:
                if not self.ready:
                    raise bad("reset before step", HTTPStatus.CONFLICT)
                frames = np.asarray(sess.step(acts)).reshape(sess.batch, *sess.frame.shape[-3:])
                step = sess.steps
        else:
            check_keys(req, {"actions", "seed", "context", "context_actions", "encoding"},
                       "/rollout", required={"actions"})
            acts = self.actions(req["actions"], "BT")
            kwargs = self.start(req) if ("seed" in req or "context" in req) else {}
            with self.lock:
                if kwargs:
                    sess.reset(**kwargs)
                    self.ready = True
                elif not self.ready:
                    raise bad("rollout needs seed or context (or a reset before)", HTTPStatus.CONFLICT)
                frames = sess.rollout(acts)
                step = sess.steps
        frames = frames.reshape(-1, *frames.shape[-4:]) if path == "/rollout" else \
            frames.reshape(-1, *frames.shape[-3:])
        return 200, {"frames": encode_frames(frames, enc), "step": int(step)}


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
    from memory.saves import SaveRoot

    root = None if saves is None else SaveRoot(saves)  # refused before the model loads
    from memory.config import load_memory_config
    from simulator.session import WorldSession

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
    p = argparse.ArgumentParser(prog="run_sim.py serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--checkpoint", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--batch", type=int, default=1, help="worlds per session")
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=None, help="denoising steps per frame")
    p.add_argument("--max-rollout-steps", type=int, default=256)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds a connection may sit idle before it is closed (default: "
                        f"{DEFAULT_TIMEOUT:g})")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads of the model (default: torch's, all cores)")
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
        from memory.saves import SaveRoot, SaveRootError

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
    from simulator import planner

    p = argparse.ArgumentParser(prog="run_sim.py plan", description=planner.__doc__,
                                parents=[planner.shared_flags()],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    planner.add_arguments(p)
    p.set_defaults(threads=None)  # run_sim.py takes None as torch's default and refuses 0
    return p


def plan_command(args: argparse.Namespace) -> int:
    from simulator import planner

    planner.run(args)
    return 0


# For run_sim.py: {name: (parser factory, command(args) -> exit code)}
COMMANDS = {"serve": (serve_parser, serve_command), "plan": (plan_parser, plan_command)}


if __name__ == "__main__":  # python -m simulator.service [--port N] ... (same as run_sim.py serve)
    sys.exit(serve_command(serve_parser().parse_args()))

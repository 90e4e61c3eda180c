"""The service's requests (`simulator.service`), apart from HTTP: `WorldService.handle(method,
path, body) -> (status, reply)` checks every field and runs it on the session behind a lock."""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from memory.saves import NAME, SaveRoot
from simulator.service_wire import (MAX_DEPTH, bad, check_keys, decode_frames, encode_frames, is_int,
                                    nesting)
from worldmodel.actions import ActionError
from worldmodel.game import MemoryFileError


class WorldService:
    """Validation and dispatch, apart from HTTP: `handle(method, path, body) -> (status, reply)`."""

    def __init__(self, session: Any, max_steps: int = 256, max_context: int = 256,
                 max_body: int = 8 << 20, saves: Any = None):
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

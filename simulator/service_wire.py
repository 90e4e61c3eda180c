"""The service's wire format (`simulator.service`): request errors, FRAMES (base64 PNG or raw
uint8) both ways, and the checks every request's JSON goes through."""

from __future__ import annotations

import base64
import binascii
import struct
from http import HTTPStatus
from typing import Any

import numpy as np

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

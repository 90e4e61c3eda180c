"""The HTTP service: a round trip on an ephemeral port, and malformed requests refused with 4xx
JSON errors while the server stays up."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import simulator.session as session_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "memory"))  # saved_variants
from simulator.service import make_server, png_decode, png_encode
from simulator.session import WorldSession

B, SIZE = 2, 16


def fake_real_context(game, seed, frames, actions=None, size=64):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (frames, size, size, 3), np.uint8), np.r_[-1, np.zeros(frames - 1, int)]


def serving(sess, **kwargs):
    """Serve `sess` on a free port in a thread for a fixture (yields the server), then stop
    it and close the session (the memory's worker thread, if a test turned memory on)."""
    srv = make_server(sess, "127.0.0.1", 0, quiet=True, **kwargs)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    sess.close()


@pytest.fixture
def server(tiny_config, perturbed_model, monkeypatch, tmp_path):
    monkeypatch.setattr(session_module, "real_context", fake_real_context)  # no slow real game
    cfg = tiny_config()
    sess = WorldSession(perturbed_model(cfg), cfg, batch=B)
    yield from serving(sess, max_steps=8, max_body=200_000, saves=tmp_path / "saves")


def call(srv, method: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=30)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = json.loads(resp.read())
    conn.close()
    return resp.status, out


def frames_of(obj: dict) -> np.ndarray:
    if obj["encoding"] == "raw":
        return np.frombuffer(base64.b64decode(obj["data"]), np.uint8).reshape(obj["shape"])
    return np.stack([png_decode(d, SIZE) for d in obj["data"]]).reshape(obj["shape"])


def context(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), np.uint8)


def test_png_round_trip():
    f = context(1)[0]
    np.testing.assert_array_equal(png_decode(png_encode(f), SIZE), f)


def test_round_trip(server):
    status, info = call(server, "GET", "/info")
    assert status == 200 and info["batch"] == B and info["frame_size"] == SIZE
    assert info["actions"][:3] == ["noop", "move_left", "move_right"] and len(info["actions"]) == 17

    ctx = context()
    status, out = call(server, "POST", "/reset", {"context": [png_encode(f) for f in ctx],
                                                  "context_actions": [-1, "move_left", 3]})
    assert status == 200 and out["step"] == 0
    np.testing.assert_array_equal(frames_of(out["frames"]), np.stack([ctx[-1]] * B))

    status, out = call(server, "POST", "/step", {"actions": ["move_up", 4], "encoding": "raw"})
    assert status == 200 and out["step"] == 1
    assert frames_of(out["frames"]).shape == (B, SIZE, SIZE, 3)

    status, out = call(server, "POST", "/rollout", {"actions": [[1, 2, 3], [4, "do", 0]], "seed": 5})
    assert status == 200 and out["step"] == 3
    png = frames_of(out["frames"])
    assert png.shape == (B, 3, SIZE, SIZE, 3)
    # The seeded reset used the (patched) real game: world i from seed + i.
    status, out = call(server, "POST", "/reset", {"seed": 5, "encoding": "raw"})
    np.testing.assert_array_equal(frames_of(out["frames"])[1],
                                  fake_real_context("crafter", 6, 3, size=SIZE)[0][-1])

    per_world = np.stack([context(3, 1), context(3, 2)])
    enc = {"encoding": "raw", "shape": list(per_world.shape),
           "data": base64.b64encode(per_world.tobytes()).decode()}
    status, out = call(server, "POST", "/rollout", {"actions": [[0], [0]], "context": enc,
                                                    "context_actions": [[-1, 0, 0], [-1, 1, 1]],
                                                    "encoding": "raw"})
    assert status == 200 and frames_of(out["frames"]).shape == (B, 1, SIZE, SIZE, 3)


def test_step_before_reset_is_a_conflict(server):
    status, out = call(server, "POST", "/step", {"actions": [0, 0]})
    assert status == 409 and "reset" in out["error"]


@pytest.mark.parametrize("path,body,status,fragment", [
    ("/step", b"{not json", 400, "JSON"),
    ("/step", b"[1, 2]", 400, "object"),
    ("/step", {"actions": [0, "fly"]}, 400, "unknown action"),
    ("/step", {"actions": [0, 17]}, 400, "out of range"),
    ("/step", {"actions": [0, True]}, 400, "int or a name"),
    ("/step", {"actions": [0]}, 400, "2 actions"),
    ("/step", {"actions": [[0], [1]]}, 400, "int or a name"),
    ("/step", {"actions": [0, 0], "bogus": 1}, 400, "unknown field"),
    ("/step", {"actions": [0, 0], "encoding": "jpeg"}, 400, "encoding"),
    ("/step", {}, 400, "needs field"),
    ("/rollout", {"actions": [[0, 1], [0]], "seed": 1}, 400, "equal-length"),
    ("/rollout", {"actions": [[0] * 9, [0] * 9], "seed": 1}, 400, "1..8"),
    ("/rollout", {"actions": [[0], [0]], "seed": -1}, 400, "seed"),
    ("/rollout", {"actions": [[0], [0]], "seed": 1, "context": []}, 400, "not both"),
    ("/reset", {}, 400, "seed or context"),
    ("/reset", {"seed": "3"}, 400, "seed"),
    ("/reset", {"context": ["%%%"]}, 400, "base64"),
    ("/reset", {"context": [base64.b64encode(b"hello, world, not a png").decode()]}, 400, "not a PNG"),
    ("/reset", {"context": [png_encode(np.zeros((8, 8, 3), np.uint8))]}, 400, "8x8"),
    ("/reset", {"context": {"encoding": "raw", "shape": [1, SIZE, SIZE, 3], "data": "AAAA"}}, 400, "bytes"),
    ("/reset", {"context": {"encoding": "raw", "shape": [3, 3, SIZE, SIZE, 3], "data": ""}}, 400, "3 worlds"),
    ("/reset", {"context": {"shape": [1, 2], "data": []}}, 400, "shape"),
    ("/reset", {"context": [png_encode(np.zeros((SIZE, SIZE, 3), np.uint8))],
                "context_actions": [0, 1]}, 400, "context_actions"),
    ("/memory", {}, 400, "needs field"),
    ("/memory", {"on": "yes"}, 400, "true or false"),
    ("/memory", {"on": 1}, 400, "true or false"),
    ("/memory", {"on": True, "worlds": [0, 2]}, 400, "out of range"),
    ("/memory", {"on": True, "worlds": -1}, 400, "out of range"),
    ("/memory", {"on": True, "worlds": "all"}, 400, "world index"),
    ("/memory", {"on": True, "worlds": [0.5]}, 400, "world index"),
    ("/memory", {"on": True, "encoding": "raw"}, 400, "unknown field"),
    ("/memory/save", {}, 400, "needs field"),
    ("/memory/save", {"name": "x", "encoding": "raw"}, 400, "unknown field"),
    ("/memory/save", {"dir": "x"}, 400, "takes a save name"),
    ("/memory/load", {"name": 3}, 400, "name must be"),
    ("/memory/load", {"name": ""}, 400, "name must be"),
    ("/memory/load", {"name": "x", "world": 2}, 400, "world must be"),
    ("/memory/load", {"name": "x", "world": True}, 400, "world must be"),
    ("/memory/load", {"name": "nothing"}, 400, "no save named nothing"),
    ("/minimap", {}, 405, "GET"),
    ("/info", None, 405, "GET"),
    ("/nowhere", {}, 404, "no such endpoint"),
])
def test_malformed_requests_are_refused_and_server_stays_up(server, path, body, status, fragment):
    raw = body if isinstance(body, bytes) else None
    got, out = call(server, "POST", path, None if raw else body, raw=raw)
    assert got == status and fragment in out["error"], out
    assert call(server, "GET", "/info")[0] == 200


def test_oversized_and_unframed_bodies(server):
    got, out = call(server, "POST", "/step", raw=b" " * 200_001)
    assert got == 413 and "exceeds" in out["error"]
    got, out = call(server, "POST", "/rollout", {"actions": [[0], [0]],
                                                 "context": [png_encode(context(1)[0])] * 300})
    assert got in (413, 400)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as s:
        s.sendall(b"POST /step HTTP/1.0\r\nContent-Type: application/json\r\n"
                  + f"Host: 127.0.0.1:{server.server_port}\r\n\r\n".encode())
        reply = s.makefile("rb").read()
    assert reply.split(b" ", 2)[1] == b"411"
    assert call(server, "GET", "/info")[0] == 200


def test_concurrent_steps_are_serialised(server):
    assert call(server, "POST", "/reset", {"seed": 1})[0] == 200
    results = []

    def go():
        results.append(call(server, "POST", "/step", {"actions": [0, 1], "encoding": "raw"}))

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out["step"] for _, out in results) == [1, 2, 3, 4, 5, 6]


def test_memory_switches_per_world(server):
    status, info = call(server, "GET", "/info")
    assert status == 200 and info["memory"] == [False] * B
    status, out = call(server, "POST", "/memory", {"on": True, "worlds": [1]})
    assert status == 200 and out == {"memory": [False, True]}
    assert call(server, "POST", "/reset", {"seed": 1})[0] == 200
    for _ in range(3):
        status, out = call(server, "POST", "/step", {"actions": [0, 1], "encoding": "raw"})
        assert status == 200 and frames_of(out["frames"]).shape == (B, SIZE, SIZE, 3)
    status, out = call(server, "POST", "/rollout", {"actions": [[1, 2], [3, 4]]})
    assert status == 200 and frames_of(out["frames"]).shape == (B, 2, SIZE, SIZE, 3)
    assert call(server, "POST", "/memory", {"on": True, "worlds": 0})[1] == {"memory": [True, True]}
    assert call(server, "POST", "/memory", {"on": False})[1] == {"memory": [False, False]}
    assert call(server, "GET", "/info")[1]["memory"] == [False, False]
    status, out = call(server, "POST", "/memory", {"on": True, "worlds": [5]})
    assert status == 400 and "out of range" in out["error"]
    assert call(server, "POST", "/step", {"actions": [0, 0]})[0] == 200  # still serving


@pytest.mark.parametrize("raw,fragment", [
    (b'{"seed": 1' + b"0" * 5000 + b"}", "not valid JSON"),  # past Python's int-string limit
    (b'{"actions": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nests deeper"),
    (b'{"actions": ' + b"[" * 500 + b"]" * 500 + b"}", "nests deeper"),  # parses; still refused
])
def test_bodies_python_chokes_on_are_400s(server, raw, fragment):
    got, out = call(server, "POST", "/reset", raw=raw)
    assert got == 400 and fragment in out["error"], out
    assert call(server, "GET", "/info")[0] == 200


def raw_exchange(srv, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is; (status, headers, body) of the reply, read until the server closes."""
    with socket.create_connection(("127.0.0.1", srv.server_port), timeout=10) as s:
        s.sendall(request)
        reply = s.makefile("rb").read()
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("request_bytes,status,fragment", [
    (b"OPTIONS /step HTTP/1.0\r\n\r\n", 405, "takes POST"),
    (b"garbage\r\n\r\n", 400, "Bad request syntax"),
    (b"GET /info HTTP/9.9\r\n\r\n", 505, "Invalid HTTP version"),
    (b"GET /info HTTP/x\r\n\r\n", 400, "Bad request version"),
    (b"PATCH /step HTTP/1.0\r\n\r\n", 501, "Unsupported method"),
])
def test_protocol_errors_are_json_too(server, request_bytes, status, fragment):
    got, headers, body = raw_exchange(server, request_bytes)
    assert got == status and headers["content-type"] == "application/json"
    assert fragment in json.loads(body)["error"]
    assert call(server, "GET", "/info")[0] == 200


def test_head_is_a_405_with_json_headers_and_no_body(server):
    got, headers, body = raw_exchange(server, b"HEAD /info HTTP/1.0\r\n\r\n")
    assert got == 405 and headers["content-type"] == "application/json" and body == b""
    assert headers["allow"] == "GET"


def test_idle_connections_time_out(tiny_config, perturbed_model):
    cfg = tiny_config()
    sess = WorldSession(perturbed_model(cfg), cfg, batch=1)
    srv = make_server(sess, "127.0.0.1", 0, quiet=True, timeout=0.2)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.server_port), timeout=10) as s:
            t0 = time.monotonic()
            assert s.recv(100) == b""  # closed by the server, not by our 10 s
            assert time.monotonic() - t0 < 5
        with socket.create_connection(("127.0.0.1", srv.server_port), timeout=10) as s:
            s.sendall(b"POST /step HTTP/1.0\r\nContent-Length: 100\r\nContent-Type: "
                      b"application/json\r\n" + f"Host: localhost:{srv.server_port}\r\n\r\n"
                      .encode() + b"{")  # body stalls
            reply = s.makefile("rb").read()
        assert reply.split(b" ", 2)[1] == b"408" and b"did not arrive" in reply
    finally:
        srv.shutdown()
        srv.server_close()
        sess.close()


@pytest.mark.parametrize("args,fragment", [
    (["--batch", "0"], "--batch must be at least 1, got 0"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--port", "70000"], "--port must be in 0..65535"),
    (["--timeout", "0"], "--timeout must be positive"),
    (["--saves", "/proc/self/no/such"], "--saves: cannot make the saves folder"),
])
def test_serve_refuses_bad_arguments_at_start_up(monkeypatch, capsys, args, fragment):
    import run_sim

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(WorldSession, "load", no_model)
    assert run_sim.main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_serve_and_plan_take_threads():
    from simulator.service import plan_parser, serve_parser

    assert serve_parser().parse_args(["--threads", "1"]).threads == 1
    assert serve_parser().parse_args([]).threads is None
    assert plan_parser().parse_args([]).threads is None  # None: torch's default, not a refused 0


def test_memory_save_and_load_round_trip(server, tmp_path):
    folder = tmp_path / "saves" / "world"
    status, out = call(server, "POST", "/memory/save", {"name": "world"})
    assert status == 409 and "reset" in out["error"]
    assert call(server, "POST", "/reset", {"seed": 1})[0] == 200
    call(server, "POST", "/step", {"actions": [1, 2]})
    status, out = call(server, "POST", "/memory/save", {"name": "world", "world": 1})
    assert status == 200 and out == {"name": "world", "world": 1, "step": 1}
    assert (folder / "memory.json").is_file()
    status, out = call(server, "POST", "/step", {"actions": [0, 0], "encoding": "raw"})
    saved_next = frames_of(out["frames"])[1]  # what world 1 drew after the save
    status, out = call(server, "POST", "/memory/load", {"name": "world", "world": 0,
                                                        "encoding": "raw"})
    # world 0 stands at world 1's step 1; the session's step goes on (2: not reset to 1)
    assert status == 200 and out["world"] == 0 and out["world_step"] == 1 and out["step"] == 2
    assert out["memory"] == [False, False]
    frames = frames_of(out["frames"])
    assert frames.shape == (B, SIZE, SIZE, 3)
    status, out = call(server, "POST", "/step", {"actions": [0, 3], "encoding": "raw"})
    np.testing.assert_array_equal(frames_of(out["frames"])[0], saved_next)  # world 0 resumed 1
    assert server.RequestHandlerClass.service.session.world_steps == [2, 3]
    (folder / "memory.json").write_text("{not json")
    status, out = call(server, "POST", "/memory/load", {"name": "world"})
    assert status == 400 and "corrupt" in out["error"]
    assert str(tmp_path) not in out["error"]  # where saves live is not the client's business
    (tmp_path / "saves" / "file").write_text("x")
    status, out = call(server, "POST", "/memory/save", {"name": "file"})
    assert status == 400 and "not a folder" in out["error"]
    status, out = call(server, "GET", "/minimap?world=0")
    assert status == 400 and "no view memory" in out["error"]
    assert call(server, "GET", "/info")[0] == 200


@pytest.fixture
def view_server(tiny_config, perturbed_model, tmp_path):
    """A 64x64 view-memory model; resets play the real game (the memory reads its pixels)."""
    from memory.config import MemoryConfig

    cfg = tiny_config("model.shift_kernel=17", "model.committed_move=7", "model.view_memory=true",
                      size=64)
    sess = WorldSession(perturbed_model(cfg), cfg, memory=MemoryConfig(stores="view"))
    yield from serving(sess, max_steps=8, saves=tmp_path / "saves")


def test_minimap_returns_the_remembered_map(view_server, tmp_path):
    sess = view_server.RequestHandlerClass.service.session
    assert call(view_server, "POST", "/reset", {"seed": 0})[0] == 200
    call(view_server, "POST", "/step", {"actions": ["move_right"]})
    status, out = call(view_server, "GET", "/minimap")
    assert status == 200 and out["world"] == 0 and out["minimap"]["shape"] == [175, 175, 3]
    img = png_decode(out["minimap"]["data"][0], 175)
    np.testing.assert_array_equal(img, sess.minimap())
    status, out = call(view_server, "GET", "/minimap?world=0&radius=4&encoding=raw")
    assert status == 200 and frames_of(out["minimap"]).shape == (63, 63, 3)
    np.testing.assert_array_equal(frames_of(out["minimap"]), sess.minimap(0, 4))
    for query, fragment in [("world=1", "world must be"), ("radius=abc", "radius must be"),
                            ("radius=0", "radius must be"), ("bogus=1", "unknown field"),
                            ("world=0&world=0", "once"), ("encoding=jpeg", "encoding")]:
        status, out = call(view_server, "GET", f"/minimap?{query}")
        assert status == 400 and fragment in out["error"], (query, out)
    status, out = call(view_server, "POST", "/memory/save", {"name": "w"})
    assert status == 200 and (tmp_path / "saves" / "w" / "view_memory.safetensors").is_file()


# ------------------------------------------------------------------ issue 24: saves and CSRF


@pytest.fixture
def saves_server(tiny_config, perturbed_model, tmp_path):
    """A 64x64 view-memory batch of 2 reset from given frames, saves in tmp_path/saves."""
    cfg = tiny_config("model.shift_kernel=17", "model.committed_move=7", "model.view_memory=true",
                      size=64)
    sess = WorldSession(perturbed_model(cfg), cfg, batch=2)
    yield from serving(sess, max_steps=8, saves=tmp_path / "saves")


def start(srv) -> None:
    ctx = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), np.uint8)
    enc = {"encoding": "raw", "shape": list(ctx.shape), "data": base64.b64encode(ctx.tobytes()).decode()}
    assert call(srv, "POST", "/reset", {"context": enc})[0] == 200
    assert call(srv, "POST", "/step", {"actions": [2, 4]})[0] == 200


def exchange(srv, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """A request with exactly these headers (http.client adds none we did not give)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in {**headers, "Content-Length": str(len(body))}.items():
        conn.putheader(k, v)
    conn.endheaders(body)
    resp = conn.getresponse()
    out = json.loads(resp.read())
    conn.close()
    return resp.status, out


def test_the_csrf_request_of_the_issue_is_refused_and_writes_nothing(saves_server, tmp_path):
    start(saves_server)
    port = saves_server.server_port
    target = tmp_path / "victim"
    body = json.dumps({"dir": str(target)}).encode()
    status, out = exchange(saves_server, "POST", "/memory/save", body,
                           {"Host": f"evil.example:{port}", "Origin": "http://evil.example",
                            "Content-Type": "text/plain"})
    assert status == 403 and "Host" in out["error"]
    assert not target.exists() and list((tmp_path / "saves").iterdir()) == []


@pytest.mark.parametrize("headers,fragment", [
    ({"Content-Type": "text/plain"}, "Content-Type"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, "Content-Type"),
    ({}, "Content-Type"),
    ({"Content-Type": "application/json", "Origin": "http://evil.example"}, "Origin"),
    ({"Content-Type": "application/json", "Origin": "null"}, "Origin"),
    ({"Content-Type": "application/json", "Origin": "http://127.0.0.1:1"}, "Origin"),
    ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, "cross-site"),
    ({"Content-Type": "application/json", "Host": "evil.example"}, "Host"),
    ({"Content-Type": "application/json", "Host": "127.0.0.1:1"}, "Host"),
    ({"Content-Type": "application/json", "Host": None}, "Host"),
])
def test_posts_a_web_page_could_send_are_403s_and_do_nothing(saves_server, tmp_path, headers,
                                                             fragment):
    start(saves_server)
    port = saves_server.server_port
    sent = {"Host": f"127.0.0.1:{port}", **headers}
    sent = {k: v for k, v in sent.items() if v is not None}
    status, out = exchange(saves_server, "POST", "/memory/save", b'{"name": "w"}', sent)
    assert status == 403 and fragment in out["error"], out
    assert list((tmp_path / "saves").iterdir()) == []
    status, out = exchange(saves_server, "POST", "/step", b'{"actions": [0, 0]}', sent)
    assert status == 403
    assert saves_server.RequestHandlerClass.service.session.steps == 1  # no step was taken


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]"])
def test_loopback_hosts_and_the_own_origin_are_served(saves_server, host):
    start(saves_server)
    port = saves_server.server_port
    status, out = exchange(saves_server, "POST", "/memory/save", b'{"name": "w"}',
                           {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}",
                            "Content-Type": "application/json; charset=utf-8"})
    assert status == 200, out


def test_reads_with_a_foreign_host_are_403s(saves_server):
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends its own Host."""
    status, out = exchange(saves_server, "GET", "/info", b"", {"Host": "evil.example:80"})
    assert status == 403 and "Host" in out["error"]
    status, out = exchange(saves_server, "GET", "/info", b"",
                           {"Host": f"localhost:{saves_server.server_port}"})
    assert status == 200


@pytest.mark.parametrize("name", ["../outside", "/tmp/abs", "a/b", "..", ".", "a b", "x" * 65])
def test_a_save_is_a_name_never_a_path(saves_server, tmp_path, name):
    start(saves_server)
    before = sorted(p.name for p in tmp_path.iterdir())
    for path in ("/memory/save", "/memory/load"):
        status, out = call(saves_server, "POST", path, {"name": name})
        assert status == 400 and "name must be" in out["error"], out
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert list((tmp_path / "saves").iterdir()) == []


def test_a_symlinked_save_is_refused_and_nothing_outside_is_written(saves_server, tmp_path):
    start(saves_server)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "saves" / "link").symlink_to(outside)
    for path in ("/memory/save", "/memory/load"):
        status, out = call(saves_server, "POST", path, {"name": "link"})
        assert status == 400 and "symlink" in out["error"], out
    assert list(outside.iterdir()) == []


def test_a_load_does_not_tell_whether_paths_exist(saves_server):
    start(saves_server)
    answers = {call(saves_server, "POST", "/memory/load", {"name": n})[1]["error"]
               .replace(n, "N") for n in ("nothing", "etc", "tmp")}
    assert len(answers) == 1  # names in the saves folder only: one answer for all of them


def test_without_saves_the_service_writes_nothing(tiny_config, perturbed_model, tmp_path):
    cfg = tiny_config()
    sess = WorldSession(perturbed_model(cfg), cfg)
    srv_gen = serving(sess)
    srv = next(srv_gen)
    try:
        assert call(srv, "POST", "/reset", {"context": [png_encode(context(1)[0])]})[0] == 200
        for path in ("/memory/save", "/memory/load"):
            status, out = call(srv, "POST", path, {"name": "w"})
            assert status == 400 and "--saves" in out["error"]
        assert list(tmp_path.iterdir()) == []
    finally:
        next(srv_gen, None)


def test_a_save_on_a_full_disk_is_one_400_and_leaves_no_folder(saves_server, tmp_path,
                                                               monkeypatch):
    import errno
    import os

    from memory import saved

    start(saves_server)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(saved, "save_world_state", full)
    status, out = call(saves_server, "POST", "/memory/save", {"name": "w"})
    assert status == 400 and "No space left" in out["error"]
    assert list((tmp_path / "saves").iterdir()) == []


@pytest.mark.parametrize("variant", sorted(__import__("saved_variants").VARIANTS))
def test_a_corrupt_save_is_one_400_and_leaves_every_world_as_it_was(saves_server, tmp_path,
                                                                    variant):
    from saved_variants import assert_same, corrupt_copy, snapshot

    start(saves_server)
    assert call(saves_server, "POST", "/memory/save", {"name": "good", "world": 0})[0] == 200
    corrupt_copy(tmp_path / "saves" / "good", tmp_path / "saves" / "bad", variant)
    sess = saves_server.RequestHandlerClass.service.session
    call(saves_server, "POST", "/step", {"actions": [1, 1]})
    before = snapshot(sess)
    status, out = call(saves_server, "POST", "/memory/load", {"name": "bad", "world": 1})
    assert status == 400 and out["error"].startswith("memory/load: "), out
    assert "\n" not in out["error"] and str(tmp_path) not in out["error"]
    assert_same(before, snapshot(sess))


def test_200_parallel_requests_get_no_connection_reset(server):
    n = 200
    barrier = threading.Barrier(n)
    results: list = []

    def go():
        barrier.wait()
        try:
            results.append(call(server, "GET", "/info")[0])
        except OSError as e:  # ConnectionResetError, BrokenPipeError, refused
            results.append(type(e).__name__)

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(200) == n, sorted(set(map(str, results)))


def test_errors_quote_at_most_200_characters_of_input(saves_server):
    start(saves_server)
    huge = "x" * 7_000_000
    for path, body in [("/step", {"actions": [huge, 0]}), ("/step", {"actions": [0, [huge]]}),
                       ("/reset", {"seed": huge}), ("/memory/save", {"name": huge}),
                       ("/step", {"actions": [0, 0], huge[:100_000]: 1}),
                       ("/step", {"actions": [0, 0], "encoding": huge})]:
        status, out = call(saves_server, "POST", path, body)
        assert status == 400 and len(out["error"]) < 600, (path, len(out["error"]))
    status, out = call(saves_server, "GET", "/" + "y" * 10_000)
    assert status == 404 and len(out["error"]) < 600


def test_serve_refuses_a_symlinked_or_file_saves_folder_at_start_up(monkeypatch, capsys, tmp_path):
    import run_sim

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(WorldSession, "load", no_model)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("x")
    for arg, fragment in [("link", "is a symlink"), ("file", "is not a folder")]:
        assert run_sim.main(["serve", "--saves", str(tmp_path / arg)]) == 2
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1
    from simulator.service import serve_parser

    assert serve_parser().parse_args([]).saves is None  # no saves unless asked for

"""The one episode format: round trip, crash safety, clear errors (worldmodel/data/episode.py)."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

import worldmodel.data.episode as episode_module
from conftest import full_disk_after, random_episode_arrays, write_episode
from worldmodel.data.episode import (ACTIONS_FILE, FRAMES_FILE, META_FILE, EpisodeError,
                                     EpisodeWriter, list_episodes, load_episode,
                                     write_json_atomic)


def test_round_trip_keeps_frames_actions_rewards_and_meta(tmp_path):
    frames, actions = random_episode_arrays(steps=9, seed=1)
    rewards = [0.0, 1.0, 0.0, -0.1, 0.0, 0.0, 2.0, 0.0, 0.5]
    path = write_episode(tmp_path / "ep", frames, actions, rewards, meta={"seed": 42})

    ep = load_episode(path)

    np.testing.assert_array_equal(ep.frames, frames)
    assert ep.frames.dtype == np.uint8
    np.testing.assert_array_equal(ep.actions, actions)
    assert ep.actions.dtype == np.int64
    np.testing.assert_allclose(ep.rewards, rewards)
    assert ep.dones.tolist() == [False] * 8 + [True]
    assert len(ep) == 9
    assert ep.meta["seed"] == 42 and ep.meta["action_space"] == "crafter"
    assert ep.meta["frame_size"] == [8, 8]
    assert ep.meta["complete"] is True and ep.meta["num_steps"] == 9
    assert [s["t"] for s in ep.steps] == list(range(9))
    assert ep.steps[3]["pos"] == [3, -3]  # extras survive


def test_continuous_actions_round_trip_as_float_vectors(tmp_path):
    frames, _ = random_episode_arrays(steps=3)
    acts = [[1.0, 0.0, 0.5], [0.0, 1.0, -2.0], [0.0, 0.0, 0.0]]
    ep = load_episode(write_episode(tmp_path / "ep", frames, acts))
    assert ep.actions.dtype == np.float32 and ep.actions.shape == (3, 3)
    np.testing.assert_array_equal(ep.actions, acts)


def test_mmap_load_matches_plain_load(tmp_path):
    frames, actions = random_episode_arrays(steps=4)
    path = write_episode(tmp_path / "ep", frames, actions)
    np.testing.assert_array_equal(np.asarray(load_episode(path, mmap=True).frames), frames)


def test_killed_writer_leaves_its_whole_prefix(tmp_path):
    """Simulate `kill -9` mid-step: a partial frame at the end of frames.u8 and a partial last
    line in actions.jsonl; meta.json was never marked complete."""
    frames, actions = random_episode_arrays(steps=6, seed=2)
    path = tmp_path / "ep"
    w = EpisodeWriter(path, {"action_space": "crafter"})
    w.add_frame(frames[0])
    for t in range(5):
        w.add_step(actions[t], frames[t + 1])
    w.sync()  # no close(): the process dies here
    with open(path / FRAMES_FILE, "ab") as f:
        f.write(frames[6].tobytes()[:100])
    with open(path / ACTIONS_FILE, "a") as f:
        f.write('{"t": 5, "action": 3, "rew')

    ep = load_episode(path)

    assert ep.meta["complete"] is False
    np.testing.assert_array_equal(ep.frames, frames[:6])
    np.testing.assert_array_equal(ep.actions, actions[:5])
    assert len(ep.rewards) == len(ep.dones) == 5


def test_action_logged_but_frame_lost_is_trimmed(tmp_path):
    """add_step writes the action line before the frame: a kill in between leaves one action too
    many, which the loader drops so that frames == actions + 1."""
    frames, actions = random_episode_arrays(steps=4, seed=3)
    path = write_episode(tmp_path / "ep", frames, actions)
    with open(path / ACTIONS_FILE, "a") as f:
        f.write(json.dumps({"t": 4, "action": 1, "reward": 0.0, "done": False}) + "\n")
    ep = load_episode(path)
    assert len(ep.frames) == 5 and len(ep.actions) == 4


def test_garbled_action_line_ends_the_prefix(tmp_path):
    frames, actions = random_episode_arrays(steps=4, seed=4)
    path = write_episode(tmp_path / "ep", frames, actions)
    lines = (path / ACTIONS_FILE).read_text().splitlines(keepends=True)
    lines[2] = "{not json\n"
    (path / ACTIONS_FILE).write_text("".join(lines))
    ep = load_episode(path)
    assert len(ep.actions) == 2
    np.testing.assert_array_equal(ep.frames, frames[:3])


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(EpisodeError, match=f"not an episode: no {META_FILE}"):
        load_episode(tmp_path / "nowhere")


def test_invalid_meta_is_a_clear_error(tmp_path):
    (tmp_path / META_FILE).write_text("{oops")
    with pytest.raises(EpisodeError, match="not valid JSON"):
        load_episode(tmp_path)


def test_episode_without_frames_is_a_clear_error(tmp_path):
    EpisodeWriter(tmp_path / "ep", {"action_space": "crafter"}).close()
    with pytest.raises(EpisodeError, match="no frame_size"):
        load_episode(tmp_path / "ep")


def test_episode_with_only_a_partial_first_frame_is_a_clear_error(tmp_path):
    frames, _ = random_episode_arrays(steps=1)
    path = write_episode(tmp_path / "ep", frames[:1], [])
    (path / FRAMES_FILE).write_bytes(frames[0].tobytes()[:10])
    with pytest.raises(EpisodeError, match="no complete frame"):
        load_episode(path)


def test_writer_refuses_bad_input(tmp_path):
    frames, actions = random_episode_arrays(steps=2)
    path = write_episode(tmp_path / "ep", frames, actions)
    with pytest.raises(EpisodeError, match="exists and is not empty"):
        EpisodeWriter(path, {})
    w = EpisodeWriter(tmp_path / "other", {})
    with pytest.raises(EpisodeError, match="add_frame"):
        w.add_step(0, frames[1])
    with pytest.raises(EpisodeError, match="uint8"):
        w.add_frame(frames[0].astype(np.float32))
    w.add_frame(frames[0])
    with pytest.raises(EpisodeError, match="shape changed"):
        w.add_frame(np.zeros((4, 4, 3), np.uint8))
    w.close()


def test_list_episodes_finds_nested_folders_sorted(tmp_path):
    frames, actions = random_episode_arrays(steps=1)
    for name in ("b/train_1", "a/train_2", "train_0"):
        write_episode(tmp_path / name, frames, actions)
    assert [p.relative_to(tmp_path).as_posix() for p in list_episodes(tmp_path)] == [
        "a/train_2", "b/train_1", "train_0"]
    assert list_episodes(tmp_path / "train_0") == [tmp_path / "train_0"]
    with pytest.raises(EpisodeError, match="no episodes"):
        list_episodes(tmp_path / "empty")


@pytest.mark.parametrize("size", ["abc", [0, 0], [8], [8, -1], [True, 8], [8.0, 8], None])
def test_bad_frame_size_is_an_episode_error_naming_the_file(tmp_path, size):
    frames, actions = random_episode_arrays(steps=2)
    path = write_episode(tmp_path / "ep", frames, actions)
    meta = json.loads((path / META_FILE).read_text())
    (path / META_FILE).write_text(json.dumps(dict(meta, frame_size=size)))
    with pytest.raises(EpisodeError, match=f"{META_FILE}: frame_size must be"):
        load_episode(path)


@pytest.mark.parametrize("text", ["[8, 8]", '{"frame_size": [1' + "0" * 5000 + ', 8]}'])
def test_meta_that_is_no_object_or_past_the_int_limit_is_an_episode_error(tmp_path, text):
    (tmp_path / META_FILE).write_text(text)
    with pytest.raises(EpisodeError, match=META_FILE):
        load_episode(tmp_path)


def test_writer_block_that_raised_leaves_the_episode_incomplete_with_the_reason(tmp_path):
    frames, actions = random_episode_arrays(steps=3)
    with pytest.raises(RuntimeError, match="boom"):
        with EpisodeWriter(tmp_path / "ep", {"action_space": "crafter"}) as w:
            w.add_frame(frames[0])
            w.add_step(actions[0], frames[1])
            raise RuntimeError("boom")
    ep = load_episode(tmp_path / "ep")
    assert ep.meta["complete"] is False and ep.meta["stopped"] == "RuntimeError: boom"
    assert len(ep) == 1


def test_full_disk_keeps_the_frames_and_notes_why_it_stopped(tmp_path, monkeypatch):
    """ENOSPC on the 4th frame: the three before load, meta.json says "disk full", and the
    block's own error is the one raised (no second one from closing on the same disk)."""
    full_disk_after(monkeypatch, 3)
    frames, actions = random_episode_arrays(steps=6)
    with pytest.raises(OSError) as e:
        write_episode(tmp_path / "ep", frames, actions)
    assert e.value.errno == errno.ENOSPC and e.value.__context__ is None
    ep = load_episode(tmp_path / "ep")
    assert len(ep.frames) == 3 and not ep.meta["complete"]
    assert ep.meta["stopped"].startswith("disk full: OSError: [Errno 28]")
    assert [p.name for p in (tmp_path / "ep").iterdir() if "tmp" in p.name] == []


def test_atomic_json_write_that_fails_leaves_no_tmp_file_and_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / META_FILE
    write_json_atomic(path, {"a": 1})

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(episode_module.json, "dump", no_space)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(path, {"a": 2})
    assert [p.name for p in tmp_path.iterdir()] == [META_FILE]
    assert json.loads(path.read_text()) == {"a": 1}

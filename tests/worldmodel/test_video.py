"""An episode's video.mp4: written beside the frames, and rebuilt from them when a kill left it
unplayable (worldmodel/data/video.py)."""

from __future__ import annotations

import shutil

import cv2

from conftest import random_episode_arrays, write_episode
from worldmodel.data.episode import VIDEO_FILE, EpisodeWriter, load_episode
from worldmodel.data.video import CODECS, codec, ensure_video, export_video, video_frames


def killed_recording(path, steps: int = 5):
    """An episode written with video=True by a process that died before closing: the mp4 on disk
    is a copy taken before any release, so it has no index (moov atom)."""
    frames, actions = random_episode_arrays(steps=steps, size=16)
    w = EpisodeWriter(path, {"action_space": "crafter", "fps": 10}, video=True)
    w.add_frame(frames[0])
    for t, a in enumerate(actions):
        w.add_step(a, frames[t + 1])
    w.sync()
    shutil.copy(path / VIDEO_FILE, path / "snapshot.mp4")
    w.close()  # the writer's own file is finished now; put the killed one in its place
    shutil.move(path / "snapshot.mp4", path / VIDEO_FILE)
    return frames


def test_codec_is_one_opencv_can_write_here():
    assert codec() in CODECS


def test_a_closed_writers_video_plays_and_is_left_alone(tmp_path):
    frames, actions = random_episode_arrays(steps=4, size=16)
    ep = load_episode(write_episode(tmp_path / "ep", frames, actions, video=True))
    assert video_frames(tmp_path / "ep" / VIDEO_FILE) == 5
    assert ensure_video(ep) is None


def test_killed_writers_video_is_rebuilt_from_the_frames(tmp_path):
    frames = killed_recording(tmp_path / "ep")
    video = tmp_path / "ep" / VIDEO_FILE
    assert video_frames(video) == 0  # nothing plays it
    assert ensure_video(load_episode(tmp_path / "ep")) == video
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    ok, first = cap.read()
    cap.release()
    assert ok and first.shape == (256, 256, 3)  # 16 px upscaled 16x
    assert [p.name for p in (tmp_path / "ep").iterdir() if "tmp" in p.name] == []


def test_truncated_video_is_rebuilt_and_export_always_writes(tmp_path):
    frames, actions = random_episode_arrays(steps=6, size=16)
    path = write_episode(tmp_path / "ep", frames, actions, video=True)
    video = path / VIDEO_FILE
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    assert video_frames(video) < len(frames)
    assert ensure_video(load_episode(path)) == video and video_frames(video) == len(frames)
    video.unlink()
    assert ensure_video(load_episode(path)) is None  # no video: collected data has none
    assert export_video(load_episode(path, mmap=True)) == video
    assert video_frames(video) == len(frames)

"""Episodic memory for B worlds at once (memory/episodic.py with batch > 1, lora.BatchedLoRA): each
world learns its own adapter, worlds with memory off are the base model bit for bit, a world of a
batch is the world alone, resets and save/load are per world, one worker serves them all."""

from __future__ import annotations

import pytest
import torch

from conftest import smooth_frames
from memory.config import MemoryConfig
from memory.episodic import EpisodicMemory
from memory.lora import CONFIG_NAME, WEIGHTS_NAME, lora_tensors
from test_episodic import TIMEOUT, wait_for
from worldmodel.rollout import Rollout

B = 3
SEEDS = [10, 11, 12]
ACTIONS = [1, 2, 2, 3, 4, 0]


def mcfg(**kw) -> MemoryConfig:
    return MemoryConfig(**{"rank": 4, "lr": 1e-2, "window": 4, "buffer_frames": 8,
                           "update_every": 1, "worker_nice": 0, **kw})


def contexts(cfg, batch: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, 3, 3, s, s) frames, distinct per world, and their actions (batch, 3)."""
    s = cfg.model.frame_size
    frames = torch.stack([smooth_frames((3, 3, s, s), seed) for seed in range(batch)])
    actions = torch.tensor([[-1, 1, 2]] * batch)
    return frames, actions


def play(model, cfg, ctx: torch.Tensor, ctx_act: torch.Tensor, seeds: list[int],
         memory: EpisodicMemory | None = None, actions=ACTIONS) -> torch.Tensor:
    """A seeded rollout of len(actions) frames per world, fed to `memory` as it goes:
    (b, T, 3, s, s)."""
    ro = Rollout(model, cfg)
    ro.reset(ctx, ctx_act, seeds)
    if memory is not None:
        memory.reset(ctx, ctx_act)
    out = []
    for a in actions:
        act = torch.full((ctx.shape[0],), a)
        if memory is not None:
            memory.before_step()
        frame = ro.step(act)
        if memory is not None:
            memory.observe(frame[:, None], act[:, None])
        out.append(frame)
    return torch.stack(out, 1)


def replay(model, cfg, seeds: list[int] = SEEDS) -> torch.Tensor:
    """The same rollout with no learning: what the model's adapters generate now."""
    ctx, ctx_act = contexts(cfg, len(seeds))
    return play(model, cfg, ctx, ctx_act, seeds)


def adapter(memory: EpisodicMemory, world: int) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in memory._targets[world].items()}


def test_worlds_with_memory_off_are_the_base_model_exactly(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    mem = EpisodicMemory(base, tiny_cfg, mcfg(), threaded=False, batch=B, enabled=False)
    assert mem._slots == [None] * B  # nothing is built for worlds without memory
    mem.set_enabled(True, worlds=1)
    assert mem.worlds_enabled == [False, True, False] and mem.enabled
    assert mem._slots[0] is None and mem._slots[2] is None
    ctx, ctx_act = contexts(tiny_cfg)
    plain = play(base, tiny_cfg, ctx, ctx_act, SEEDS)
    learned = play(mem.model, tiny_cfg, ctx, ctx_act, SEEDS, mem)
    assert mem.world_stats(1)["updates"] == len(ACTIONS)
    assert torch.equal(learned[0], plain[0]) and torch.equal(learned[2], plain[2])
    assert not torch.equal(learned[1], plain[1])  # world 1 generates with what it learned
    assert not torch.equal(replay(mem.model, tiny_cfg)[1], replay(base, tiny_cfg)[1])
    mem.set_enabled(False, worlds=[1])  # off: the base model again, and nothing is lost
    assert torch.equal(replay(mem.model, tiny_cfg), replay(base, tiny_cfg))
    kept = adapter(mem, 1)
    mem.set_enabled(True, worlds=[1])
    for k, v in adapter(mem, 1).items():
        assert torch.equal(v, kept[k]), k


def test_a_world_of_a_batch_is_the_world_alone(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    ctx, ctx_act = contexts(tiny_cfg)
    batched = EpisodicMemory(base, tiny_cfg, mcfg(), threaded=False, batch=B, enabled=False)
    batched.set_enabled(True, worlds=[1])
    alone = EpisodicMemory(base, tiny_cfg, mcfg(), threaded=False)  # B = 1: merged adapter
    out_b = play(batched.model, tiny_cfg, ctx, ctx_act, SEEDS, batched)
    out_1 = play(alone.model, tiny_cfg, ctx[1:2], ctx_act[1:2], SEEDS[1:2], alone)
    assert alone.learner.updates == len(ACTIONS)
    torch.testing.assert_close(out_b[1], out_1[0], atol=1e-4, rtol=0)
    single = lora_tensors(alone.model)
    for k, v in adapter(batched, 1).items():
        torch.testing.assert_close(v, single[k], atol=1e-4, rtol=0)


def test_reset_returns_one_world_to_the_base_exactly(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    mem = EpisodicMemory(base, tiny_cfg, mcfg(), threaded=False, batch=B, enabled=False)
    mem.set_enabled(True, worlds=[1, 2])
    ctx, ctx_act = contexts(tiny_cfg)
    play(mem.model, tiny_cfg, ctx, ctx_act, SEEDS, mem)
    kept = adapter(mem, 2)
    mem.reset(ctx, ctx_act, worlds=[1])
    plain, now = replay(base, tiny_cfg), replay(mem.model, tiny_cfg)
    assert torch.equal(now[:2], plain[:2])  # world 1 is back to the base model, bit for bit
    assert not torch.equal(now[2], plain[2])  # world 2 keeps its memory
    for k, v in adapter(mem, 2).items():
        assert torch.equal(v, kept[k]), k
    mem.reset()  # every world
    assert torch.equal(replay(mem.model, tiny_cfg), plain)
    assert mem.frames_seen == 0


def test_save_one_world_and_load_it_into_another(tiny_cfg, perturbed_model, tmp_path):
    base = perturbed_model(tiny_cfg)
    mem = EpisodicMemory(base, tiny_cfg, mcfg(), threaded=False, batch=B, enabled=False)
    mem.set_enabled(True, worlds=[1])
    ctx, ctx_act = contexts(tiny_cfg)
    play(mem.model, tiny_cfg, ctx, ctx_act, SEEDS, mem)
    saved = adapter(mem, 1)
    assert mem.save(tmp_path / "w1", world=1) == tmp_path / "w1"
    assert {p.name for p in (tmp_path / "w1").iterdir()} == {WEIGHTS_NAME, CONFIG_NAME}
    meta = mem.load(tmp_path / "w1", world=2)  # world 2 never had memory: nothing is built
    assert meta["frames_seen"] == str(len(ACTIONS)) and mem._slots[2] is None
    for k, v in adapter(mem, 2).items():
        assert torch.equal(v, saved[k]), k
    mem.set_enabled(True, worlds=[2])  # its learner starts from the loaded adapter
    for k, v in mem._slots[2].learner.params.items():
        assert torch.equal(v, saved[k]), k
    # Worlds 1 and 2 now hold one adapter: with the same context and noise they agree.
    ctx_same = ctx.clone()
    ctx_same[2] = ctx[1]
    out = play(mem.model, tiny_cfg, ctx_same, ctx_act, [0, 5, 5])
    torch.testing.assert_close(out[1], out[2], atol=1e-6, rtol=0)
    assert not torch.equal(out[1], play(base, tiny_cfg, ctx_same, ctx_act, [0, 5, 5])[1])
    # A one-world memory reads what a batched world wrote, and the other way round.
    alone = EpisodicMemory(base, tiny_cfg, mcfg(), threaded=False)
    alone.load(tmp_path / "w1")
    for k, v in lora_tensors(alone.model).items():
        assert torch.equal(v, saved[k]), k
    alone.save(tmp_path / "single")
    mem.reset(worlds=0)
    mem.load(tmp_path / "single", world=0)
    for k, v in adapter(mem, 0).items():
        assert torch.equal(v, saved[k]), k


def test_the_worker_serves_several_worlds_and_closes(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    mem = EpisodicMemory(base, tiny_cfg, mcfg(), threaded=True, batch=B, enabled=False)
    try:
        mem.set_enabled(True, worlds=[0, 2])
        ctx, ctx_act = contexts(tiny_cfg)
        play(mem.model, tiny_cfg, ctx, ctx_act, SEEDS, mem)
        assert wait_for(lambda: all(mem._slots[i].updates >= 2 for i in (0, 2)))
        assert mem._slots[1] is None
        mem.before_step()  # swaps both worlds' newest adapters in
        plain, now = replay(base, tiny_cfg), replay(mem.model, tiny_cfg)
        assert torch.equal(now[1], plain[1])
        assert not torch.equal(now[0], plain[0]) and not torch.equal(now[2], plain[2])
        assert mem.worker.updates == sum(mem.world_stats(i)["updates"] for i in range(B))
        mem.reset(ctx, ctx_act)  # every world back to the base, whatever is in flight
        assert torch.equal(replay(mem.model, tiny_cfg), plain)
    finally:
        assert mem.close(timeout=TIMEOUT)
    assert not mem.worker.running


def test_memory_off_for_a_big_batch_builds_nothing(tiny_cfg, perturbed_model):
    base = perturbed_model(tiny_cfg)
    mem = EpisodicMemory(base, tiny_cfg, mcfg(), threaded=True, batch=32, enabled=False)
    assert mem._slots == [None] * 32 and not mem.enabled and not mem.worker.running
    mem.set_enabled(False)
    assert mem._slots == [None] * 32 and not mem.worker.running
    ctx, ctx_act = contexts(tiny_cfg, 32)
    seeds = list(range(32))
    assert torch.equal(play(mem.model, tiny_cfg, ctx, ctx_act, seeds, mem, actions=[1, 2]),
                       play(base, tiny_cfg, ctx, ctx_act, seeds, actions=[1, 2]))
    assert mem.close()


@pytest.mark.parametrize("call,message", [
    (lambda m: m.set_enabled(True, worlds=3), "out of range"),
    (lambda m: m.set_enabled(True, worlds=[0, -1]), "out of range"),
    (lambda m: m.set_enabled(True, worlds=[True]), "must be an int"),
    (lambda m: m.set_enabled(True, worlds="1"), "list of ints"),
    (lambda m: m.save("unused", world=5), "out of range"),
    (lambda m: m.load("unused", world=1.0), "must be an int"),
    (lambda m: m.reset(worlds=[7]), "out of range"),
    (lambda m: m.update_now(1), "never had memory"),
])
def test_bad_world_indices_are_clear_errors(tiny_cfg, perturbed_model, call, message):
    mem = EpisodicMemory(perturbed_model(tiny_cfg), tiny_cfg, mcfg(), threaded=False, batch=B,
                         enabled=False)
    with pytest.raises((ValueError, RuntimeError), match=message):
        call(mem)
    assert mem._slots == [None] * B  # a refused call builds nothing


def test_bad_batch_is_a_clear_error(tiny_cfg, perturbed_model):
    with pytest.raises(ValueError, match="at least one world"):
        EpisodicMemory(perturbed_model(tiny_cfg), tiny_cfg, mcfg(), threaded=False, batch=0)
